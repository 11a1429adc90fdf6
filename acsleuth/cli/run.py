"""``acsleuth run``: detect, batch-correct and subtype the anomalous cells of files."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._anndata.detect import corrected_slot, keys
from .._constants import DEFAULTS, SCORES
from . import HelpFormatter, add_common, epoch_settings, non_negative
from ._safety import check_checkpoint_folder, check_output_folder

if TYPE_CHECKING:
    import h5py
    from anndata import AnnData

    from ..model import ACsleuth
    from ..parallel import Context
    from ..train import Checkpoint

CORRECTED_FILE = ".corrected.h5"
KEYS = keys()


EPILOG = """examples:
  acsleuth run --reference ref.h5ad --target target.h5ad --batch-key batch --out results/
  acsleuth run --reference ref.h5ad --target target.h5ad --layer counts --no-correct \\
      --epochs prepare=10,train=5 --out quick/
  acsleuth run --model results/model --target new.h5ad --batch-key batch --out new_results/

outputs: OUT/target.h5ad (annotated target), OUT/cells.csv (score, call, subtype per cell),
OUT/model/ (the fitted model) and OUT/report.md with its figures."""

TRAINING_OPTIONS = ("epochs", "n_top_genes", "seed", "checkpoint_every", "resume", "checkpoint_dir")
"""Options that set the training of a new model, refused with ``--model``."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``run`` to ``subparsers``."""
    run = subparsers.add_parser(
        "run",
        help="detect, batch-correct and subtype anomalous target cells",
        description="Fit ACsleuth on normal reference cells (or load a saved model), then score, "
        "call, batch-correct and subtype the cells of a target.",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    run.add_argument("--reference", help="normal reference cells (.h5ad, 10x folder or CSV)")
    run.add_argument("--target", required=True, help="cells to screen (.h5ad, 10x folder or CSV)")
    run.add_argument("--out", required=True, help="output folder (refused if it exists)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    run.add_argument("--model", help="a saved model folder (e.g. OUT/model): skip training")
    run.add_argument("--batch-key", help="obs column of the target's batches")
    run.add_argument("--label-key", help="obs column of known cell types (report only)")
    matrix = run.add_mutually_exclusive_group()
    matrix.add_argument(
        "--layer", help="read layers[LAYER] of both inputs instead of X (e.g. counts)"
    )
    matrix.add_argument(
        "--use-raw",
        action="store_true",
        help="read .raw of both inputs instead of X (OUT/target.h5ad then has .raw's genes as X)",
    )
    run.add_argument("--score", choices=SCORES, help=f"score type (default {DEFAULTS.score})")
    run.add_argument(
        "--anomaly-ratio",
        type=float,
        help="expected fraction of anomalies (default: estimated from the scores)",
    )
    run.add_argument("--n-subtypes", default="auto", help="'auto' or a number")
    run.add_argument(
        "--n-top-genes",
        type=int,
        help=f"highly variable reference genes the model uses (default {DEFAULTS.n_top_genes})",
    )
    run.add_argument(
        "--no-correct",
        action="store_true",
        help="skip batch correction (subtype the uncorrected expression)",
    )
    run.add_argument(
        "--no-batch-scale",
        action="store_true",
        help="with --batch-key: do not divide each batch's per-gene scale against the "
        "reference out before the distance and the correction (batch_scale=False; faster: "
        "100,000 cells in 10 batches scored in 22 s instead of 39 s, benchmarks/RESULTS.md)",
    )
    run.add_argument(
        "--no-corrected-layer",
        action="store_true",
        help="do not write the dense "
        "corrected expression into OUT/target.h5ad (it is still used for subtyping)",
    )
    run.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: the usable cores minus those "
        "other processes keep busy; -1: every usable core)",
    )
    add_common(run)
    run.add_argument(
        "--checkpoint-every",
        type=non_negative,
        metavar="N",
        help="write the training state every N epochs (default: at the end of each "
        "training stage and on Ctrl-C only)",
    )
    run.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT.checkpoint)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run checkpointed in --checkpoint-dir (same "
        "inputs and settings); the result equals an uninterrupted run's",
    )
    run.set_defaults(func=run_command, interrupted_note=interrupted_note)
    return run


def run_command(args: argparse.Namespace) -> int:
    """The whole pipeline on files: never modifies the inputs, writes ``--out`` atomically.

    Before any work, ``--out`` and the checkpoint folder are checked against the inputs
    (:mod:`acsleuth.cli._safety`) and every option is checked to apply to the branch taken.
    Under ``torchrun --nproc_per_node=K -m acsleuth run ...`` the K processes share the work
    on torch.distributed (gloo on CPU, NCCL on GPUs) and rank 0 writes ``--out``.
    """
    from .. import parallel

    start = time.perf_counter()
    inputs = {"--reference": args.reference, "--target": args.target, "--model": args.model}
    out = check_output_folder(args.out, inputs, overwrite=args.overwrite)
    _check_branch(args)
    if args.model is None:
        check_checkpoint_folder(checkpoint_dir(args), inputs, out)
    ctx, _ = parallel.init(args.device)  # under torchrun: join the process group
    try:
        return run_ranked(args, out, start, ctx)
    except Exception as err:
        if not isinstance(err, FileExistsError) and has_training_state(args):
            err.add_note(
                f"the checkpoint in {checkpoint_dir(args)} keeps the training done so far: "
                "rerun with --resume to reuse it, or delete it"
            )
        raise
    finally:
        parallel.shutdown()


def _check_branch(args: argparse.Namespace) -> None:
    """Refuse options the branch taken cannot honour, rather than ignore them."""
    if args.model is None and args.reference is None:
        raise ValueError("give --reference (to train) or --model (a saved model)")
    if args.no_batch_scale and args.batch_key is None:
        raise ValueError("--no-batch-scale applies to --batch-key only; add --batch-key or drop it")
    if args.model is not None:
        given = [name for name in TRAINING_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(
                f"{options} set the training of a new model; drop them when scoring "
                "with --model (or train anew with --reference)"
            )


def run_ranked(args: argparse.Namespace, out: Path, start: float, ctx: Context) -> int:
    """:func:`run_command` in one process of ``ctx`` (rank 0 alone writes ``out``).

    An ``.h5ad`` target is read backed and the corrected expression streamed into a file in
    the output folder, so an atlas is never held as a dense matrix.
    """
    import contextlib

    from .._atomic import atomic_dir

    model, reference, target, checkpoint, n_subtypes = _inputs(args, ctx)
    correct = reference is not None and not args.no_correct
    writing = atomic_dir(out, overwrite=args.overwrite) if ctx.is_main else contextlib.nullcontext()
    with writing as tmp:
        sink = None
        if tmp is not None and correct:
            sink = _corrected_sink(tmp / CORRECTED_FILE, target.n_obs, len(model.genes_))
        try:
            model.run(
                reference,
                target,
                batch_key=args.batch_key,
                anomaly_ratio=args.anomaly_ratio,
                n_subtypes=n_subtypes,
                correct=correct,
                corrected_out=sink,
                checkpoint=checkpoint,
                layer=args.layer,
            )
            if tmp is None:
                return 0
            _record_command(args, target)
            _explain_subtypes(target, model, sink, args.layer)
            _write_target(
                target, tmp / "target.h5ad", model, None if args.no_corrected_layer else sink
            )
        finally:
            if sink is not None:
                sink.file.close()
                (tmp / CORRECTED_FILE).unlink()
        _write_tables(args, model, reference, target, tmp)
    if (
        checkpoint is not None and ctx.is_main
    ):  # the outputs are complete: the checkpoint has served
        checkpoint.remove()
    n_anomalies = int(target.obs[KEYS.anomaly].sum())
    print(
        f"acsleuth run: {target.n_obs} target cells, {n_anomalies} called anomalous, "
        f"{target.uns[KEYS.uns].get('n_subtypes', 0)} subtypes; wrote {out}/ "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _inputs(args: argparse.Namespace, ctx: Context) -> tuple[ACsleuth, Any, AnnData, Any, Any]:
    """The model (loaded, or fitted on the reference), the reference, the target, the
    checkpoint and the number of subtypes, every input checked before any training."""
    import acsleuth

    from .._logging import stage_timer
    from ..data import read
    from ..data.checks import check_inputs, check_obs_column
    from ..stages.subtype import check_n_subtypes

    n_subtypes = check_n_subtypes(args.n_subtypes)
    with stage_timer({}, "checking the inputs"):
        target = read(args.target, backed=True)
        reference = read(args.reference, backed=True) if args.reference is not None else None
        if args.use_raw:
            target = raw_as_x(target, f"--target {args.target}")
            if reference is not None:
                reference = raw_as_x(reference, f"--reference {args.reference}")
        settings: dict[str, Any] = {"verbose": not args.quiet, "n_jobs": args.threads}
        settings |= {
            k: v
            for k, v in (("score", args.score), ("anomaly_ratio", args.anomaly_ratio))
            if v is not None
        }
        if args.no_batch_scale:
            settings["batch_scale"] = False
        if args.model is not None:
            model = acsleuth.ACsleuth.load(args.model, device=args.device).set_params(**settings)
        else:
            training = {"random_state": args.seed, "n_top_genes": args.n_top_genes}
            settings |= {k: v for k, v in training.items() if v is not None}
            model = acsleuth.ACsleuth(device=args.device, **settings, **epoch_settings(args.epochs))
        check_inputs(
            reference,
            target,
            genes=model.genes_,
            layer=args.layer,
            batch_key=args.batch_key,
            score=model.params["score"],
        )
        if args.label_key is not None:
            check_obs_column(target, args.label_key, option="--label-key")
    checkpoint = _checkpoint(args, ctx) if args.model is None else None
    if not model.is_fitted:
        model.fit(reference, checkpoint=checkpoint, layer=args.layer)
    return model, reference, target, checkpoint, n_subtypes


def raw_as_x(adata: AnnData, name: str) -> AnnData:
    """``adata.raw`` as an AnnData in memory (same cells, ``.raw``'s genes as ``X``); a
    ``ValueError`` naming the input ``name`` when it has no ``.raw``."""
    if adata.raw is None:
        raise ValueError(
            f"--use-raw: {name} has no .raw; drop --use-raw to read X, or pass --layer"
        )
    from anndata import AnnData

    x = adata.raw.X  # backed: an h5py dataset or anndata's sparse dataset
    x = x.to_memory() if hasattr(x, "to_memory") else (x[()] if adata.isbacked else x.copy())
    return AnnData(
        X=x,
        obs=adata.obs.copy(),
        var=adata.raw.var.copy(),
        obsm=dict(adata.obsm),
        uns=dict(adata.uns),
    )


def _explain_subtypes(target: AnnData, model: ACsleuth, corrected: Any, layer: str | None) -> None:
    """ACE panels of the subtypes (for ``report.md``), when there are at least two."""
    from ..tl import explain_subtypes

    if target.uns[KEYS.uns].get("n_subtypes", 0) >= 2:
        explain_subtypes(target, model, corrected=corrected, layer=layer)


def _record_command(args: argparse.Namespace, target: AnnData) -> None:
    """Add the command line and the input paths to ``uns[key]["params"]``."""
    params = target.uns[KEYS.uns]["params"]
    params["command"] = args.command_line
    if args.use_raw:
        params["use_raw"] = True
    for name in ("reference", "target", "model"):
        if getattr(args, name) is not None:
            params[name] = str(Path(getattr(args, name)).resolve())


def _write_tables(
    args: argparse.Namespace, model: ACsleuth, reference, target: AnnData, folder: Path
) -> None:
    """``cells.csv``, the saved model and the report into ``folder``."""
    import pandas as pd

    truth_key = None
    if args.label_key is not None:
        truth_key = _label_truth(target, reference, args.label_key)
    pd.DataFrame(
        {
            "score": target.obs[KEYS.score],
            "anomaly": target.obs[KEYS.anomaly],
            "subtype": target.obs[KEYS.subtype],
        }
    ).to_csv(folder / "cells.csv", index_label="cell")
    model.save(folder / "model")
    _write_report(target, folder, args.label_key, truth_key)


def checkpoint_dir(args: argparse.Namespace) -> Path:
    if args.checkpoint_dir is not None:
        return Path(args.checkpoint_dir)
    out = Path(os.path.abspath(args.out))  # "results/" and "." too: beside it
    return out.with_name(f"{out.name}.checkpoint")


def has_training_state(args: argparse.Namespace) -> bool:
    """Whether the run's checkpoint folder holds training state that ``--resume`` would use."""
    from ..train.checkpoint import TRAINING_FILE

    return (checkpoint_dir(args) / TRAINING_FILE).is_file()


def interrupted_note(args: argparse.Namespace) -> str:
    """What to add to the message of an interrupted run."""
    if has_training_state(args):
        return f" (the checkpoint in {checkpoint_dir(args)} continues the run: add --resume)"
    return ""


def _checkpoint(args: argparse.Namespace, ctx: Context) -> Checkpoint | None:
    """The run's checkpoint (single-process runs): written on Ctrl-C, at the end of each
    training stage and every ``--checkpoint-every`` epochs; read back with ``--resume``."""
    from ..train import Checkpoint

    if ctx.distributed:
        if args.resume or args.checkpoint_every:
            raise ValueError(
                "--checkpoint-every and --resume work in single-process runs only; drop them or "
                "run without torchrun"
            )
        return None
    return Checkpoint(checkpoint_dir(args), every=args.checkpoint_every or 0, resume=args.resume)


def _corrected_sink(path: Path, n_obs: int, n_genes: int) -> h5py.Dataset:
    """An on-disk float32 ``(n_obs, n_genes)`` dataset that the corrected expression streams into."""
    import h5py

    handle = h5py.File(path, "w")
    chunks = (
        (max(1, min(n_obs, (1 << 20) // (4 * n_genes))), n_genes) if n_obs else None
    )  # ~1 MB rows
    return handle.create_dataset("corrected", shape=(n_obs, n_genes), dtype="f4", chunks=chunks)


def _write_target(
    target: AnnData, path: Path, model: ACsleuth, corrected: h5py.Dataset | None
) -> None:
    """The annotated target as ``.h5ad``, with the ``corrected`` expression (when given) under
    ``layers`` or ``obsm`` as :func:`acsleuth.tl.correct_batches` would put it.

    A backed target's file is copied and only its annotations are rewritten, so ``X`` is
    never loaded; datasets are copied on disk.
    """
    import shutil

    import h5py
    from anndata.io import write_elem

    if target.isbacked:
        shutil.copyfile(target.filename, path)
        with h5py.File(path, "r+") as f:
            write_elem(f, "obs", target.obs)
            write_elem(f, "obsm", dict(target.obsm))
            write_elem(f, "uns", dict(target.uns))
    else:
        target.write_h5ad(path)
    if corrected is None:
        return
    with h5py.File(path, "r+") as f:
        group = f[corrected_slot(target, model.genes_)]
        if KEYS.corrected in group:  # the target is an earlier run's output
            del group[KEYS.corrected]
        f.copy(corrected, group, name=KEYS.corrected)
        group[KEYS.corrected].attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})


def _label_truth(target, reference, label_key: str) -> str | None:
    """Mark target cells whose label the reference lacks as true anomalies (for the report)."""
    if label_key not in target.obs:
        raise KeyError(f"--label-key {label_key!r} is not an obs column of the target")
    if reference is None or label_key not in reference.obs:
        return None
    seen = set(reference.obs[label_key].astype(str))
    target.obs[KEYS.true_anomaly] = ~target.obs[label_key].astype(str).isin(seen).to_numpy()
    return KEYS.true_anomaly


def _write_report(target, folder: Path, label_key: str | None, truth_key: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from ..report import write_report

    write_report(target, folder, label_key=label_key, truth_key=truth_key)


__all__ = ["add_parser", "checkpoint_dir", "has_training_state", "run_command", "run_ranked"]
