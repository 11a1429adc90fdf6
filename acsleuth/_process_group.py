"""The ``torch.distributed`` process group of a run: joining it, leaving it, this process's place.

:mod:`acsleuth.parallel` re-exports these names; its collectives use them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands in the run.

    Attributes
    ----------
    rank
        This process's rank, ``0 <= rank < world_size``.
    world_size
        Number of processes.
    local_rank
        Rank on this node (the GPU index under ``torchrun``).
    backend
        ``"nccl"``, ``"gloo"``, or None when ``torch.distributed`` is not initialised.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is more than one process; collectives are no-ops otherwise."""
        return self.world_size > 1


SINGLE = Context(rank=0, world_size=1, local_rank=0, backend=None)


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def context() -> Context:
    """The current run's :class:`Context`; ``Context(0, 1, 0, None)`` without a process group."""
    if not _initialized():
        return SINGLE
    rank = dist.get_rank()
    return Context(
        rank=rank,
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", rank)),
        backend=str(dist.get_backend()),
    )


def _resolve(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"acsleuth runs on 'cpu' or 'cuda', got device {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but torch sees no CUDA GPU; use 'cpu' or 'auto'"
        )
    return device


def _rank_cuda_device(local_rank: int) -> torch.device:
    n_gpus = torch.cuda.device_count()
    if local_rank >= n_gpus:
        raise RuntimeError(
            f"LOCAL_RANK={local_rank} but this node has {n_gpus} CUDA GPU(s); start at most "
            f"{n_gpus} processes per node (torchrun --nproc_per_node={n_gpus})"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def init(
    device: str | torch.device = "auto", *, timeout: timedelta | None = None
) -> tuple[Context, torch.device]:
    """Join the ``torchrun`` process group when there is one.

    With ``WORLD_SIZE > 1`` in the environment, initialise ``torch.distributed`` (backend
    ``"nccl"`` for a CUDA ``device``, ``"gloo"`` for CPU; rendezvous from torchrun's
    environment variables) and, on CUDA, make GPU ``LOCAL_RANK`` this process's device.
    Otherwise nothing happens. Calling it again in an initialised process only returns the
    current context.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; under torchrun a CUDA
        device index is replaced by ``LOCAL_RANK``.
    timeout
        How long a collective may wait for the other ranks before failing; torch's
        default when None.

    Returns
    -------
    context, device
        This process's :class:`Context` and the device it should compute on.
    """
    device = _resolve(device)
    if _initialized():
        ctx = context()
        if device.type == "cuda" and ctx.distributed:
            device = _rank_cuda_device(ctx.local_rank)
        return ctx, device
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE, device
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but this torch build has no torch.distributed; "
            "run a single process or install a torch build with distributed support"
        )
    if device.type == "cuda":
        device = _rank_cuda_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl", device_id=device, timeout=timeout)
    else:
        dist.init_process_group(backend="gloo", timeout=timeout)
    return context(), device


def shutdown() -> None:
    """Destroy the process group, if any (call once at the end of a distributed run)."""
    if _initialized():
        dist.destroy_process_group()


def comm_device(ctx: Context) -> torch.device:
    """Where tensors made up for a collective live: the rank's GPU for NCCL, else CPU."""
    if ctx.backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


__all__ = ["SINGLE", "Context", "comm_device", "context", "init", "shutdown"]
