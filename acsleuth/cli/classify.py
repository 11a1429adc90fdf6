"""``acsleuth classify``: cell types and an out-of-distribution score for target cells (CLAMS)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .._constants import SEED
from . import non_negative, positive
from ._safety import check_checkpoint_folder, check_output_folder
from .run import checkpoint_dir, has_training_state, interrupted_note

if TYPE_CHECKING:
    from ..model import CellTypeClassifier
    from ..train import Checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify", help="classify target cells against a labelled reference, flag unknown types"
    )
    parser.add_argument("--reference", help="labelled reference cells (.h5ad, 10x folder or CSV)")
    parser.add_argument(
        "--target", required=True, help="cells to classify (.h5ad, 10x folder or CSV)"
    )
    parser.add_argument("--label-key", help="obs column of the reference's cell types")
    parser.add_argument("--out", required=True, help="output folder (refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--reject", action="store_true", help="call out-of-distribution cells 'unassigned'"
    )
    parser.add_argument("--model", help="a saved classifier folder (e.g. OUT/model): skip training")
    parser.add_argument(
        "--epochs", type=positive, help="training epochs (default: the classifier's)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"seed of the classifier (default {SEED})"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative,
        metavar="N",
        help="write the training state every N epochs (default: at the end and on Ctrl-C only)",
    )
    parser.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT.checkpoint)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted training checkpointed in --checkpoint-dir (same inputs "
        "and settings); the classifier equals an uninterrupted run's",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(func=run_classify, interrupted_note=interrupted_note)


def run_classify(args: argparse.Namespace) -> int:
    """Train (or load) a classifier, classify ``--target``, write ``--out`` atomically: the
    annotated ``target.h5ad``, ``cells.csv``, the model and a plot. Inputs are never modified."""
    import pandas as pd

    from .. import tl
    from .._anndata.classify import KEY, keys
    from .._atomic import atomic_dir
    from ..data import read
    from ..model import CellTypeClassifier
    from ..train import Checkpoint

    start = time.perf_counter()
    inputs = {"--reference": args.reference, "--target": args.target, "--model": args.model}
    out = check_output_folder(args.out, inputs, overwrite=args.overwrite)
    training = (args.epochs, args.reference, args.checkpoint_every, args.checkpoint_dir)
    if args.model is not None and (any(v is not None for v in training) or args.resume):
        raise ValueError(
            "--model classifies with a saved classifier; drop --reference, --epochs and the "
            "checkpoint options"
        )
    if args.model is None and (args.reference is None or args.label_key is None):
        raise ValueError(
            "give --reference and --label-key (to train), or --model (a saved classifier)"
        )
    checkpoint = None
    if args.model is None:
        check_checkpoint_folder(checkpoint_dir(args), inputs, out)
        checkpoint = Checkpoint(
            checkpoint_dir(args), every=args.checkpoint_every or 0, resume=args.resume
        )
    target = read(args.target, backed=True)
    if args.model is not None:
        model = CellTypeClassifier.load(args.model, device=args.device)
    else:
        model = _train(args, checkpoint)
    annotated = target if target.isbacked else target.copy()  # a backed file opens read-only
    tl.classify(annotated, model=model, reject=args.reject)
    k = keys(KEY)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        _write_target(annotated, tmp / "target.h5ad")
        pd.DataFrame(
            {
                "type": annotated.obs[k["label"]],
                "confidence": annotated.obs[k["confidence"]],
                "ood_score": annotated.obs[k["ood_score"]],
                "ood": annotated.obs[k["ood"]],
            }
        ).to_csv(tmp / "cells.csv", index_label="cell")
        model.save(tmp / "model")
        _plot(annotated, tmp / "ood_scores.png")
    if checkpoint is not None:  # the outputs are complete: the checkpoint has served
        checkpoint.remove()
    n_ood = int(annotated.obs[k["ood"]].sum())
    print(
        f"acsleuth classify: {annotated.n_obs} target cells into {len(model.classes_)} types, "
        f"{n_ood} called out of distribution; wrote {out}/ in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _train(args: argparse.Namespace, checkpoint: Checkpoint) -> CellTypeClassifier:
    """A classifier trained on ``--reference``; a failure notes the checkpoint to resume."""
    from ..data import read
    from ..model import CellTypeClassifier

    settings = {} if args.epochs is None else {"epochs": args.epochs}
    model = CellTypeClassifier(
        device=args.device, random_state=args.seed, verbose=not args.quiet, **settings
    )
    try:
        return model.fit(
            read(args.reference, backed=True), label_key=args.label_key, checkpoint=checkpoint
        )
    except Exception as err:
        if not isinstance(err, FileExistsError) and has_training_state(args):
            err.add_note(
                f"the checkpoint in {checkpoint_dir(args)} keeps the training done so far: "
                "rerun with --resume to reuse it, or delete it"
            )
        raise


def _write_target(adata, path: Path) -> None:
    """The annotated target as ``.h5ad``; a backed target's file is copied and only its
    annotations rewritten, so ``X`` is never loaded."""
    import shutil

    import h5py
    from anndata.io import write_elem

    if not adata.isbacked:
        adata.write_h5ad(path)
        return
    shutil.copyfile(adata.filename, path)
    with h5py.File(path, "r+") as f:
        write_elem(f, "obs", adata.obs)
        write_elem(f, "obsm", dict(adata.obsm))
        write_elem(f, "uns", dict(adata.uns))


def _plot(adata, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import pl

    fig = pl.ood_scores(adata, return_fig=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
