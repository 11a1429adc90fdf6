"""Run ``acsleuth run`` in a child process that a test can interrupt or kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import acsleuth
from acsleuth import datasets

ROOT = Path(acsleuth.__file__).resolve().parents[1]
# Enough epochs that a run lasts a few seconds, few enough for the suite.
EPOCHS = ["20", "5", "2", "5", "2"]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    reference, target = datasets.synthetic(150, 100, 60, n_anomaly_types=2, anomaly_ratio=0.3,
                                           n_batches=2, seed=1)
    reference.write_h5ad(folder / "ref.h5ad")
    target.write_h5ad(folder / "tgt.h5ad")
    return folder / "ref.h5ad", folder / "tgt.h5ad"


def command(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "acsleuth", "run", "--reference", str(folder / "ref.h5ad"),
            "--target", str(folder / "tgt.h5ad"), "--out", str(out), "--batch-key", "batch",
            "--device", "cpu", "--quiet", "--epochs", *EPOCHS, *extra]


def _env() -> dict[str, str]:
    # one thread: results are bit-identical between processes (reductions keep their order)
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Wait until ``path`` exists; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def stop(process: subprocess.Popen, sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig``; the exit code and stderr."""
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err
