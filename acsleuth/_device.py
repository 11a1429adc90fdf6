"""Which device a model runs on, and how much of it its caches may take."""

from __future__ import annotations

import torch

from . import parallel

DEFAULT_CACHE_BYTES = 2 << 30  # cache_gb=None on CPU


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if str(device) == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but torch sees no CUDA GPU; use 'cpu' or 'auto'"
        )
    ctx = parallel.context()
    if device.type == "cuda" and ctx.distributed:  # one GPU per torchrun process
        return torch.device("cuda", ctx.local_rank)
    return device


def cache_bytes(cache_gb: float | None, device: torch.device) -> int:
    """The ``cache_gb`` budget in bytes; None: 2 GB on CPU, half the free memory of a GPU."""
    if cache_gb is not None:
        return int(float(cache_gb) * 2**30)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return DEFAULT_CACHE_BYTES


__all__ = ["DEFAULT_CACHE_BYTES", "cache_bytes", "resolve_device"]
