"""``acsleuth annotate``: open-world annotation of a target from a labelled reference (scDET)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .._anndata.annotate import KEY_ADDED
from .._constants import SEEN_LABELS
from . import non_negative, positive, whole_number

if TYPE_CHECKING:
    from ..train import Checkpoint
from ._safety import check_checkpoint_folder, check_output_file, check_output_folder


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``annotate`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "annotate", help="label target cells of known types, cluster cells of new types (scDET)"
    )
    parser.add_argument(
        "--reference", required=True, help="labelled cells (.h5ad, 10x folder or CSV)"
    )
    parser.add_argument(
        "--target", required=True, help="cells to annotate (.h5ad, 10x folder or CSV)"
    )
    parser.add_argument(
        "--label-key", required=True, help="obs column of the reference's cell types"
    )
    parser.add_argument(
        "--n-types",
        required=True,
        type=n_types,
        help="types in reference and target together (>= the reference's), or 'auto'",
    )
    parser.add_argument(
        "--out", required=True, help="the annotated target (.h5ad; refused if it exists)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--model-out", help="also save the fitted model in this folder")
    parser.add_argument(
        "--key-added", default=KEY_ADDED, help=f"prefix of the keys (default {KEY_ADDED})"
    )
    parser.add_argument(
        "--epochs", type=non_negative, help="training epochs (default: the model's)"
    )
    parser.add_argument(
        "--members",
        type=positive,
        help="networks trained and averaged (default: the model's, OpenWorldConfig.members)",
    )
    parser.add_argument(
        "--seen-labels",
        choices=SEEN_LABELS,
        help="who names the type of a cell called seen: a logistic regression of the reference "
        "where it is confident (linear, the default) or the prototype head (scdet, the seed's "
        "rule)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        help="write the training state here at the end and on Ctrl-C (off by default; "
        "deleted once --out is written)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative,
        default=0,
        metavar="N",
        help="with --checkpoint-dir: also every N epochs",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run checkpointed in --checkpoint-dir (same inputs and settings); "
        "the result equals an uninterrupted run's",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(func=annotate_command)
    return parser


def n_types(text: str) -> int | str:
    """An argparse type: ``auto`` or a whole number >= 1."""
    if text == "auto":
        return text
    try:
        return whole_number(text, 1)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number >= 1, got {text!r}"
        ) from None


def _checkpoint(args: argparse.Namespace, inputs: dict[str, str], out: Path) -> Checkpoint | None:
    """The run's checkpoint (None without ``--checkpoint-dir``), after checking the options."""
    from ..train import Checkpoint

    if args.checkpoint_dir is None:
        if args.resume or args.checkpoint_every:
            raise ValueError("--resume and --checkpoint-every need --checkpoint-dir (the folder)")
        return None
    folder = check_checkpoint_folder(args.checkpoint_dir, inputs, out)
    return Checkpoint(folder, every=args.checkpoint_every, resume=args.resume)


def annotate_command(args: argparse.Namespace) -> int:
    """Annotate ``--target`` into ``--out``; the input files are only read."""
    from .._anndata.annotate import write_annotation
    from .._atomic import atomic_path
    from ..data import read
    from ..model.annotator import OpenWorldAnnotator
    from ..train.contrastive import OpenWorldConfig

    out = Path(args.out)
    inputs = {"--reference": args.reference, "--target": args.target}
    check_output_file(out, inputs, overwrite=args.overwrite)
    if out.suffix != ".h5ad":
        raise ValueError(f"--out must name an .h5ad file, got {out}")
    if args.model_out is not None:
        check_output_folder(args.model_out, inputs, option="--model-out", overwrite=args.overwrite)
    checkpoint = _checkpoint(args, inputs, out)
    given = {"epochs": args.epochs, "members": args.members, "seen_labels": args.seen_labels}
    config = replace(OpenWorldConfig(), **{k: v for k, v in given.items() if v is not None})
    reference, annotated = (
        read(args.reference),
        read(args.target),
    )  # in memory: files stay as they are
    model = OpenWorldAnnotator(args.n_types, config=config, seed=args.seed, device=args.device)
    model.fit(reference, annotated, label_key=args.label_key, checkpoint=checkpoint)
    write_annotation(annotated, model.predict(annotated), model, args.key_added)
    if args.model_out is not None:
        model.save(args.model_out)
    with atomic_path(out, overwrite=args.overwrite) as tmp:
        annotated.write_h5ad(tmp)
    if checkpoint is not None:  # the output is complete: the checkpoint has served
        checkpoint.remove()
    labels = annotated.obs[args.key_added]
    print(
        f"acsleuth annotate: {annotated.n_obs} cells, {int(annotated.obs[args.key_added + '_novel'].sum())} "
        f"of new types in {sum(str(c).startswith('novel_') for c in labels.unique())} clusters; "
        f"wrote {out}"
    )
    return 0


__all__ = ["add_parser", "annotate_command"]
