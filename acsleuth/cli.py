"""Command-line interface: ``acsleuth run`` and ``acsleuth demo`` (``python -m acsleuth``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    import h5py
    from anndata import AnnData

    from .model import ACsleuth
    from .parallel import Context
    from .train import Checkpoint


def _demo(args: argparse.Namespace) -> int:
    """The whole pipeline on scanpy's pbmc68k_reduced, with and without batch correction."""
    from .demo import run_demo

    run_demo(args.out, held_out=args.held_out, seed=args.seed, device=args.device,
             epochs=args.epochs)
    return 0


def _run(args: argparse.Namespace) -> int:
    """The whole pipeline on files: never modifies the inputs, writes ``--out`` atomically.

    Under ``torchrun --nproc_per_node=K -m acsleuth run ...`` the K processes share the work
    on torch.distributed (gloo on CPU, NCCL on GPUs) and rank 0 writes ``--out``.
    """
    from . import parallel

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if args.model is not None and args.epochs is not None:
        raise ValueError("--epochs sets the training of a new model; drop it when scoring with --model")
    ctx, _ = parallel.init(args.device)  # under torchrun: join the process group
    try:
        return _run_ranked(args, out, start, ctx)
    except Exception as err:
        if not isinstance(err, FileExistsError) and _has_training_state(args):
            err.add_note(f"the checkpoint in {_checkpoint_dir(args)} keeps the training done so far: "
                         "rerun with --resume to reuse it, or delete it")
        raise
    finally:
        parallel.shutdown()


def _run_ranked(args: argparse.Namespace, out: Path, start: float, ctx: Context) -> int:
    """:func:`_run` in one process of ``ctx`` (rank 0 alone writes ``out``).

    An ``.h5ad`` target is read backed and the corrected expression streamed into a file in
    the output folder, so an atlas is never held as a dense matrix.
    """
    import contextlib

    import pandas as pd

    from . import ACsleuth
    from ._atomic import atomic_dir
    from .data import read
    from .demo import EPOCH_PARAMS
    from .model import batch_codes
    from .stages.subtype import check_n_subtypes

    if args.model is None and args.reference is None:
        raise ValueError("give --reference (to train) or --model (a saved model)")
    n_subtypes = check_n_subtypes(args.n_subtypes)
    checkpoint = _checkpoint(args, ctx)
    target = read(args.target, backed=True)
    reference = read(args.reference, backed=True) if args.reference is not None else None
    batch_codes(target, args.batch_key)  # a missing column is refused before any training
    if args.label_key is not None and args.label_key not in target.obs:
        raise KeyError(f"--label-key {args.label_key!r} is not an obs column of the target "
                       f"(columns: {list(target.obs.columns)})")
    if args.model is not None:
        model = ACsleuth.load(args.model, device=args.device)
    else:  # the ratio is checked here, before training
        epochs = dict(zip(EPOCH_PARAMS, args.epochs, strict=True)) if args.epochs else {}
        model = ACsleuth(device=args.device, random_state=args.seed, verbose=not args.quiet,
                         anomaly_ratio=args.anomaly_ratio, **epochs)
        model.fit(reference, checkpoint=checkpoint)
    writing = atomic_dir(out, overwrite=args.overwrite) if ctx.is_main else contextlib.nullcontext()
    with writing as tmp:
        sink = None
        if tmp is not None and reference is not None:
            sink = _corrected_sink(tmp / CORRECTED_FILE, target.n_obs, len(model.genes_))
        try:
            if reference is not None:
                model.run(reference, target, batch_key=args.batch_key, anomaly_ratio=args.anomaly_ratio,
                          n_subtypes=n_subtypes, corrected_out=sink, checkpoint=checkpoint)
            else:  # a saved model without a reference: detect and subtype, no batch correction
                model.run(None, target, anomaly_ratio=args.anomaly_ratio, n_subtypes=n_subtypes,
                          correct=False)
            if tmp is None:
                return 0
            _write_target(target, tmp / "target.h5ad", model, sink)
        finally:
            if sink is not None:
                sink.file.close()
                (tmp / CORRECTED_FILE).unlink()
        truth_key = None
        if args.label_key is not None:
            truth_key = _label_truth(target, reference, args.label_key)
        pd.DataFrame({
            "score": target.obs["acsleuth_score"], "anomaly": target.obs["acsleuth_anomaly"],
            "subtype": target.obs["acsleuth_subtype"],
        }).to_csv(tmp / "cells.csv", index_label="cell")
        model.save(tmp / "model")
        _write_report(target, tmp, args.label_key, truth_key)
    if checkpoint is not None and ctx.is_main:  # the outputs are complete: the checkpoint has served
        checkpoint.remove()
    n_anomalies = int(target.obs["acsleuth_anomaly"].sum())
    print(f"acsleuth run: {target.n_obs} target cells, {n_anomalies} called anomalous, "
          f"{target.uns['acsleuth'].get('n_subtypes', 0)} subtypes; wrote {out}/ "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


CORRECTED_FILE = ".corrected.h5"


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    return Path(args.checkpoint_dir or f"{args.out}.checkpoint")


def _has_training_state(args: argparse.Namespace) -> bool:
    """Whether the run's checkpoint folder holds training state that ``--resume`` would use."""
    from .train.checkpoint import TRAINING_FILE

    return (_checkpoint_dir(args) / TRAINING_FILE).is_file()


def _checkpoint(args: argparse.Namespace, ctx: Context) -> Checkpoint | None:
    """The run's checkpoint (single-process runs): written on Ctrl-C, at the end of each
    training stage and every ``--checkpoint-every`` epochs; read back with ``--resume``."""
    from .train import Checkpoint

    if ctx.distributed:
        if args.resume or args.checkpoint_every:
            raise ValueError(
                "--checkpoint-every and --resume work in single-process runs only; drop them or "
                "run without torchrun"
            )
        return None
    return Checkpoint(_checkpoint_dir(args), every=args.checkpoint_every, resume=args.resume)


def _corrected_sink(path: Path, n_obs: int, n_genes: int) -> h5py.Dataset:
    """An on-disk float32 ``(n_obs, n_genes)`` dataset that the corrected expression streams into."""
    import h5py

    handle = h5py.File(path, "w")
    chunks = (max(1, min(n_obs, (1 << 20) // (4 * n_genes))), n_genes) if n_obs else None  # ~1 MB rows
    return handle.create_dataset("corrected", shape=(n_obs, n_genes), dtype="f4", chunks=chunks)


def _write_target(target: AnnData, path: Path, model: ACsleuth, corrected: h5py.Dataset | None) -> None:
    """The annotated target as ``.h5ad``, with the ``corrected`` expression (when given) under
    ``layers`` or ``obsm`` as :func:`acsleuth.tl.correct_batches` would put it.

    A backed target's file is copied and only its annotations are rewritten, so ``X`` is
    never loaded; datasets are copied on disk.
    """
    import shutil

    import h5py
    from anndata.io import write_elem

    from .tl import _corrected_slot

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
        group = f[_corrected_slot(target, model)]
        if "acsleuth_corrected" in group:  # the target is an earlier run's output
            del group["acsleuth_corrected"]
        f.copy(corrected, group, name="acsleuth_corrected")
        group["acsleuth_corrected"].attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})


def _label_truth(target, reference, label_key: str) -> str | None:
    """Mark target cells whose label the reference lacks as true anomalies (for the report)."""
    if label_key not in target.obs:
        raise KeyError(f"--label-key {label_key!r} is not an obs column of the target")
    if reference is None or label_key not in reference.obs:
        return None
    seen = set(reference.obs[label_key].astype(str))
    target.obs["acsleuth_true_anomaly"] = ~target.obs[label_key].astype(str).isin(seen).to_numpy()
    return "acsleuth_true_anomaly"


def _write_report(target, folder: Path, label_key: str | None, truth_key: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from .report import write_report

    write_report(target, folder, label_key=label_key, truth_key=truth_key)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acsleuth", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acsleuth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches"
    )
    demo.add_argument("--held-out", nargs="+", default=["CD19+ B", "Dendritic"],
                      help="cell types treated as anomalies")
    demo.add_argument("--seed", type=int, default=2024)
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--out", default="acsleuth_demo", help="output folder")
    demo.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_epochs(demo)
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="detect, batch-correct and subtype anomalous target cells")
    run.add_argument("--reference", help="normal reference cells (.h5ad, 10x folder or CSV)")
    run.add_argument("--target", required=True, help="cells to screen (.h5ad, 10x folder or CSV)")
    run.add_argument("--out", required=True, help="output folder (refused if it exists)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    run.add_argument("--batch-key", help="obs column of the target's batches")
    run.add_argument("--anomaly-ratio", type=float, help="expected fraction of anomalies")
    run.add_argument("--n-subtypes", default="auto", help="'auto' or a number (default auto)")
    run.add_argument("--label-key", help="obs column of known cell types (report only)")
    run.add_argument("--model", help="a saved model folder (e.g. OUT/model): skip training")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--seed", type=int, default=2024)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_epochs(run)
    run.add_argument("--checkpoint-every", type=_non_negative, default=0, metavar="N",
                     help="write the training state every N epochs (default 0: at the end of each "
                     "training stage and on Ctrl-C only)")
    run.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT.checkpoint)")
    run.add_argument("--resume", action="store_true",
                     help="continue the interrupted run checkpointed in --checkpoint-dir (same "
                     "inputs and settings); the result equals an uninterrupted run's")
    run.set_defaults(func=_run)
    return parser


def _add_epochs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--epochs", type=_non_negative, nargs=5, metavar=("PREPARE", "TRAIN", "SCORE", "STYLE", "SUBTYPE"),
        help="epochs of the two module I stages, the MMD predictor, the style transfer and "
        "DESC (default: the model's, 50 20 5 50 100)",
    )


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "debug", False):
        return args.func(args)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        print(f"acsleuth {args.command}: error: {message}{notes} (--debug shows the traceback)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"acsleuth {args.command}: {_interrupted(args, err)}", file=sys.stderr)
        return 130


def _interrupted(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """What an interrupted command left behind, and how to go on."""
    from .train import TrainingInterrupted

    if isinstance(err, TrainingInterrupted):
        return (f"interrupted in stage {err.stage!r} after {err.epoch} complete epoch(s); the "
                f"checkpoint in {err.folder} continues it: rerun the same command with --resume")
    message = "interrupted; the outputs were left as they were"
    if args.command == "run" and _has_training_state(args):
        message += f" (the checkpoint in {_checkpoint_dir(args)} continues the run: add --resume)"
    return message


if __name__ == "__main__":
    sys.exit(main())
