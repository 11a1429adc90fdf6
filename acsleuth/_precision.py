"""Mixed precision: ``precision="bf16"`` runs the networks' forward passes under bf16 autocast;
``"auto"`` does so on a CPU with bf16 matrix units and runs float32 elsewhere."""

from __future__ import annotations

import functools

import torch

from ._constants import PRECISIONS, Precision

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # native bf16 matrix products (Sapphire Rapids on)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (else bf16 is emulated, no faster)."""
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return any(capabilities.get(flag, False) for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: Precision, device: torch.device | str) -> Precision:
    """``"fp32"`` or ``"bf16"``: ``"auto"`` is bf16 on a CPU with :func:`cpu_has_bf16`, else
    fp32 (on CUDA too: bf16 there was not measured against quality)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cpu" and cpu_has_bf16() else "fp32"


def autocast(device: torch.device | str, precision: Precision) -> torch.autocast:
    """bf16 autocast on ``device`` when ``precision`` resolves to ``"bf16"``
    (:func:`resolve_precision`), else a disabled context.

    Parameters stay float32 (no loss scaling is needed with bf16's float32 exponent range);
    the fused ops and every loss and score are computed in float32.
    """
    device = torch.device(device)
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
