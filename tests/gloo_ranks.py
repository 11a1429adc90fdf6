"""Run a test body on several CPU processes joined by torch.distributed (gloo), as torchrun would."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from acsleuth import parallel

Body = Callable[[parallel.Context, torch.device, Path], Any]


def _rank(rank: int, body: Body, world: int, port: int, folder: str, timeout_s: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(  # what torchrun sets
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    ctx, device = parallel.init("cpu", timeout=timedelta(seconds=timeout_s // 2))
    try:
        torch.save(body(ctx, device, Path(folder)), Path(folder) / f"rank{rank}.pt")
    finally:
        parallel.shutdown()


def run_ranks(body: Body, folder: Path, *, world: int = 2, timeout_s: int = 300) -> list[Any]:
    """``body(ctx, device, folder)`` on ``world`` spawned ranks; what each returned, in rank order.

    ``body`` must be a module-level function (the ranks are spawned). Fails the test when the
    ranks do not finish within ``timeout_s``.
    """
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = mp.start_processes(
        _rank, args=(body, world, port, str(folder), timeout_s), nprocs=world, join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    while not procs.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for process in procs.processes:
                process.terminate()
            pytest.fail(f"the {world} spawned processes did not finish in {timeout_s} s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world)]
