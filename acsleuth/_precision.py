"""Mixed precision: ``precision="bf16"`` runs the networks' forward passes under bf16 autocast."""

from __future__ import annotations

import torch

from ._constants import PRECISIONS, Precision


def autocast(device: torch.device | str, precision: Precision) -> torch.autocast:
    """bf16 autocast on ``device`` when ``precision == "bf16"``, else a disabled context.

    Parameters stay float32 (no loss scaling is needed with bf16's float32 exponent range);
    the fused ops and every loss and score are computed in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )
