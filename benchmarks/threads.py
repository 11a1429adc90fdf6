"""Saved-model scoring time at the default thread count and at each fixed count, beside a busy process.

Usage::

    PYTHONPATH=. python benchmarks/threads.py --quick          # ~1 min on 2 cores
    PYTHONPATH=. python benchmarks/threads.py --cells 20000 --genes 2000 --repeats 3

Method. A synthetic reference and target (``acsleuth.datasets.synthetic``, two target batches)
are written as ``.h5ad`` into a temporary folder and a model is trained once with few epochs
(``acsleuth run``; its quality does not matter for timing). Then, after one untimed warm-up
run (the first child was ~1.5x slower: cold caches), a fresh
``python -m acsleuth run --model M --target T --batch-key batch --no-correct`` per setting
scores the target, the settings in turn, ``--repeats`` rounds, while a second process keeps every core busy (``--busy``
processes of a numpy matrix-product loop, each with its own BLAS threads, started before and
stopped after the timings; ``--busy 0`` measures an idle machine). Settings: ``default`` (no
``--threads`` and no ``OMP_NUM_THREADS`` in the environment: what a user gets) and
``--threads t`` for ``t`` = 1 .. the usable cores (``os.sched_getaffinity``). The time is the
child's wall time (``time.perf_counter`` around ``subprocess.run``, including the import of
torch, identical for every setting). The table gives the median and the ratio of each setting
to the best; the issue's target is ``default / best <= 1.5``.

Results are only meaningful on a machine nobody else is using: other load adds to the busy
process and changes the best thread count.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY_LOOP = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((512, 512))\n"
    "while True:\n"
    "    a = (a @ a) / 512.0\n"
)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def child_env(threads_env: bool) -> dict[str, str]:
    """The environment of a timed child: without any thread variable for the default setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    env["PYTHONPATH"] = str(ROOT)
    if threads_env:
        env["OMP_NUM_THREADS"] = "1"
    return env


def run_child(command: list[str], env: dict[str, str]) -> None:
    """Run ``command``; a failure stops the benchmark with the end of the child's stderr."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(command)}\n{done.stderr[-3000:]}")


def write_data(folder: Path, cells: int, genes: int) -> None:
    from acsleuth import datasets

    reference, target = datasets.synthetic(
        max(500, cells // 4),
        cells,
        genes,
        n_anomaly_types=2,
        anomaly_ratio=0.1,
        n_batches=2,
        seed=0,
    )
    reference.write_h5ad(folder / "ref.h5ad")
    target.write_h5ad(folder / "tgt.h5ad")


def acsleuth_run(*options: str) -> list[str]:
    """``python -m acsleuth run`` with ``options``, quietly, on the CPU."""
    return [sys.executable, "-m", "acsleuth", "run", "--quiet", "--device", "cpu", *options]


def train(folder: Path) -> Path:
    inputs = ["--reference", str(folder / "ref.h5ad"), "--target", str(folder / "tgt.h5ad")]
    epochs = ["--epochs", "prepare=2,train=1,score=2,subtype=2"]
    command = acsleuth_run(*inputs, "--out", str(folder / "fit"), "--no-correct", *epochs)
    run_child(command, child_env(True))
    return folder / "fit" / "model"


def score_command(folder: Path, model: Path, threads: int | None) -> list[str]:
    command = acsleuth_run(
        *("--model", str(model), "--target", str(folder / "tgt.h5ad"), "--batch-key", "batch"),
        *("--no-correct", "--out", str(folder / "scored"), "--overwrite"),
    )
    return command if threads is None else [*command, "--threads", str(threads)]


def start_busy(n: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=child_env(False)) for _ in range(n)
    ]


def time_once(command: list[str]) -> float:
    """Wall seconds of one child running ``command``."""
    start = time.perf_counter()
    run_child(command, child_env(False))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=20_000, help="target cells")
    parser.add_argument("--genes", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=1, help="busy processes beside the timed run")
    parser.add_argument("--quick", action="store_true", help="2,000 cells x 300 genes, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.genes, args.repeats = 2_000, 300, 1
    cores = usable_cores()
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"usable cores {cores}, busy processes {args.busy}, {args.cells} cells x {args.genes} genes"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder, args.cells, args.genes)
        model = train(folder)
        settings: list[tuple[str, int | None]] = [("default", None)]
        settings += [(f"--threads {t}", t) for t in range(1, cores + 1)]
        busy = start_busy(args.busy)
        try:
            time_once(score_command(folder, model, None))  # warm-up, untimed: the first child
            times: dict[str, list[float]] = {name: [] for name, _ in settings}  # ran ~1.5x slower
            for _ in range(args.repeats):  # settings in turn, so that drift hits each alike
                for name, t in settings:
                    times[name].append(time_once(score_command(folder, model, t)))
        finally:
            for process in busy:
                process.kill()
                process.wait()
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = min(medians.values())
    print("\n| setting | median s | runs | / best |\n|---|---|---|---|")
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {medians[name]:.2f} | {runs} | {medians[name] / best:.2f} |")
    print(f"\ndefault / best = {medians['default'] / best:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
