"""Backend selection: compiled CUDA / CPU kernels, or the pure-PyTorch fallbacks."""

from __future__ import annotations

import os
from typing import Literal

import torch

from .. import _extension

Backend = Literal["cuda", "cpu", "torch"]
_CHOICES = ("auto", "cuda", "cpu", "torch")
_COMPILED_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def _forced() -> str:
    value = os.environ.get("ACSLEUTH_BACKEND", "auto").strip().lower()
    if value not in _CHOICES:
        raise ValueError(
            f"ACSLEUTH_BACKEND={value!r} is not one of {', '.join(_CHOICES)}; "
            "unset it or pick one of those"
        )
    return value


def backend(device: str | torch.device = "cpu") -> Backend:
    """Backend that acsleuth's ops use for tensors on ``device``.

    ``ACSLEUTH_BACKEND=auto|cuda|cpu|torch`` forces one; forcing a compiled backend that is
    unavailable, or that does not match the device, raises with the reason.
    """
    forced = _forced()
    if forced == "torch":
        return "torch"
    kind = torch.device(device).type
    _extension.load()
    available = {"cpu": _extension.HAS_OPS, "cuda": _extension.HAS_CUDA_OPS}
    if forced == "auto":
        return kind if available.get(kind, False) else "torch"
    if forced != kind:
        raise RuntimeError(
            f"ACSLEUTH_BACKEND={forced} but the tensors are on {kind}; move them to "
            f"{forced} or set ACSLEUTH_BACKEND=auto"
        )
    if not available[forced]:
        reason = _extension.LOAD_ERROR or "the library was built without CUDA kernels"
        raise RuntimeError(f"ACSLEUTH_BACKEND={forced} but its kernels are unavailable: {reason}")
    return forced


def route(t: torch.Tensor) -> Backend:
    """Backend for this tensor; compiled kernels fall back to torch for unsupported dtypes."""
    chosen = backend(t.device)
    if chosen != "torch" and t.dtype not in _COMPILED_DTYPES[chosen]:
        return "torch"
    return chosen
