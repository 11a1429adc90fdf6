"""What the divergence guard's per-epoch snapshot and the checkpoints cost in module I.

Usage::

    PYTHONPATH=. python benchmarks/guard_overhead.py                       # 5,000 cells x 2,000 genes
    PYTHONPATH=. python benchmarks/guard_overhead.py --cells 500 --epochs 2 1   # smoke run

Fits module I twice on the same synthetic reference: without a checkpoint (the guard's
snapshot of weights, Adam moments, memory bank and RNG states is still taken every epoch),
and with ``Checkpoint(every=1)`` (the state also written to disk every epoch, the worst case).
The snapshot and the writes are timed inside each fit, so their share of module I is a
ratio within the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import acsleuth
from acsleuth.datasets import synthetic
from acsleuth.train import Checkpoint, adversarial


def _timed(owner: object, name: str, spent: list[float]) -> Callable[[], None]:
    """Wrap ``owner.name`` so that its seconds add up in ``spent``; returns the undo."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def measure(reference, epochs: tuple[int, int], every: int | None) -> dict[str, float]:
    snapshot, save = [0.0], [0.0]
    undo = [_timed(adversarial, "snapshot", snapshot), _timed(Checkpoint, "save", save)]
    try:
        model = acsleuth.ACsleuth(
            prepare_epochs=epochs[0], train_epochs=epochs[1], verbose=False, device="cpu"
        )
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None if every is None else Checkpoint(Path(folder) / "ckpt", every=every)
            model.fit(reference, checkpoint=checkpoint)
    finally:
        for restore in undo:
            restore()
    return {"module I": model.timings_["module I"], "snapshot": snapshot[0], "save": save[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument(
        "--epochs", type=int, nargs=2, default=(10, 5), metavar=("PREPARE", "TRAIN")
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference, _ = synthetic(args.cells, 10, args.genes, seed=0)
    measure(reference, (1, 1), None)  # warm-up: first-call costs stay out of the table
    n_epochs = sum(args.epochs)
    print(
        f"{args.cells} reference cells x {args.genes} genes, {n_epochs} epochs, {args.threads} threads"
    )
    print("| run | module I (s) | snapshots (s) | share | checkpoint writes (s) | share |")
    print("|---|---|---|---|---|---|")
    for label, every in (("guard only", None), ("guard + checkpoint every epoch", 1)):
        t = measure(reference, tuple(args.epochs), every)
        print(
            f"| {label} | {t['module I']:.1f} | {t['snapshot']:.2f} | "
            f"{t['snapshot'] / t['module I']:.1%} | {t['save']:.2f} | {t['save'] / t['module I']:.1%} |"
        )


if __name__ == "__main__":
    main()
