"""What the test modules share: fast model settings, backends, toy names, spawned gloo ranks and
``acsleuth run`` child processes. Fixtures stay in the ``conftest.py`` files.

Importable from every test folder as ``_helpers`` (``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from anndata import AnnData

import acsleuth
from acsleuth import _extension, datasets, parallel

# ------------------------------------------------------------------ fast model settings

FAST = {
    "prepare_epochs": 2,
    "train_epochs": 1,
    "score_epochs": 2,
    "batch_size": 32,
    "n_memory": 50,
    "device": "cpu",
    "verbose": False,
}
"""A few epochs of module I and of the MMD predictor on CPU, quietly; tests add what they need."""

FAST_PIPELINE = {**FAST, "warm_epochs": 2, "style_epochs": 1, "subtype_epochs": 2}
"""Every stage of :meth:`acsleuth.ACsleuth.run` in a few epochs."""

FAST_RUN = {
    **FAST,
    "kin_epochs": 1,
    "style_epochs": 1,
    "subtype_epochs": 2,
    "score": "scaled",
    "anomaly_ratio": 0.25,
}
"""The whole pipeline on the ``"scaled"`` score with a known ratio (no predictor to train)."""


class FastACsleuth(acsleuth.ACsleuth):
    """``acsleuth.ACsleuth`` with :data:`FAST_PIPELINE` defaults (patch it in to speed up the
    command)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**FAST_PIPELINE, **kwargs})


# ------------------------------------------------------------------ backends and toy data

FORMATS = ["dense", "csr", "csc", "backed-dense", "backed-csr", "backed-csc"]
"""Every storage of ``X`` the data layer reads."""


def available_backends() -> list[str]:
    """The op backends present here: ``"torch"`` always, ``"cpu"`` and ``"cuda"`` when built."""
    _extension.load()
    found = ["torch"]
    if _extension.HAS_OPS:
        found.append("cpu")
    if _extension.HAS_CUDA_OPS and torch.cuda.is_available():
        found.append("cuda")
    return found


def device_of(backend: str) -> str:
    """The torch device a backend runs on."""
    return "cuda" if backend == "cuda" else "cpu"


def names(prefix: str, n: int) -> list[str]:
    """``[prefix0, prefix1, ...]``: ``n`` cell or gene names."""
    return [f"{prefix}{i}" for i in range(n)]


def two_batches(n_reference: int, n_genes: int) -> tuple[AnnData, AnnData]:
    """Raw UMI counts (CSR float32): ``n_reference`` reference and 100 target cells, 30 % of
    them anomalies of two types, over two target batches (seed 1)."""
    return datasets.synthetic(
        n_reference, 100, n_genes, n_anomaly_types=2, anomaly_ratio=0.3, n_batches=2, seed=1
    )


# ------------------------------------------------------------------ gloo ranks

Body = Callable[[parallel.Context, torch.device, Path], Any]


def _rank(rank: int, body: Body, world: int, port: int, folder: str, timeout_s: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(  # what torchrun sets
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    ctx, device = parallel.init("cpu", timeout=timedelta(seconds=timeout_s // 2))
    try:
        torch.save(body(ctx, device, Path(folder)), Path(folder) / f"rank{rank}.pt")
    finally:
        parallel.shutdown()


def run_ranks(body: Body, folder: Path, *, world: int = 2, timeout_s: int = 300) -> list[Any]:
    """``body(ctx, device, folder)`` on ``world`` CPU processes joined by torch.distributed
    (gloo), as torchrun would start them; what each returned, in rank order.

    ``body`` must be a module-level function (the ranks are spawned). Fails the test when the
    ranks do not finish within ``timeout_s``.
    """
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = mp.start_processes(
        _rank,
        args=(body, world, port, str(folder), timeout_s),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    while not procs.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for process in procs.processes:
                process.terminate()
            pytest.fail(f"the {world} spawned processes did not finish in {timeout_s} s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world)]


# ------------------------------------------------------------------ `acsleuth run` in a child

ROOT = Path(acsleuth.__file__).resolve().parents[1]
# Enough epochs that a run lasts a few seconds, few enough for the suite.
CLI_EPOCHS = ["20", "5", "2", "5", "2"]


def write_cli_inputs(folder: Path) -> tuple[Path, Path]:
    """Write the child runs' ``ref.h5ad`` and ``tgt.h5ad`` (two target batches) into ``folder``."""
    reference, target = two_batches(150, 60)
    reference.write_h5ad(folder / "ref.h5ad")
    target.write_h5ad(folder / "tgt.h5ad")
    return folder / "ref.h5ad", folder / "tgt.h5ad"


def run_in(folder: Path, *extra: str, out: str = "out", target: str = "tgt.h5ad") -> int:
    """``acsleuth run`` in this process on the inputs of :func:`write_cli_inputs` on the CPU,
    writing ``folder / out``; returns the exit code."""
    from acsleuth.cli import main

    return main(
        [
            "run",
            "--reference",
            str(folder / "ref.h5ad"),
            "--target",
            str(folder / target),
            "--out",
            str(folder / out),
            "--device",
            "cpu",
            *extra,
        ]
    )


def cli_command(folder: Path, out: Path, *extra: str) -> list[str]:
    """``acsleuth run`` on the inputs of :func:`write_cli_inputs`, writing ``out``."""
    return [
        sys.executable,
        "-m",
        "acsleuth",
        "run",
        "--reference",
        str(folder / "ref.h5ad"),
        "--target",
        str(folder / "tgt.h5ad"),
        "--out",
        str(out),
        "--batch-key",
        "batch",
        "--device",
        "cpu",
        "--quiet",
        "--epochs",
        *CLI_EPOCHS,
        *extra,
    ]


def _cli_env() -> dict[str, str]:
    # one thread: results are bit-identical between processes (reductions keep their order)
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cli_run(args: list[str]) -> subprocess.CompletedProcess:
    """Run a command to its end (at most 300 s), capturing its output."""
    return subprocess.run(args, env=_cli_env(), capture_output=True, text=True, timeout=300)


def cli_start(args: list[str]) -> subprocess.Popen:
    """Start a command that a test can interrupt or kill.

    Its Ctrl-C (SIGINT) is reset to the default, as in a terminal's foreground job: a
    suite started in the background by a shell without job control (``cmd &``) ignores
    SIGINT, every child inherits that, and the interrupted run would finish instead."""
    return subprocess.Popen(
        args,
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Wait until ``path`` exists; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def cli_stop(process: subprocess.Popen, sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig``; the exit code and stderr."""
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err
