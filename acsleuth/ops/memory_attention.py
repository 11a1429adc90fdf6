"""Memory-bank attention of the anomaly generator (docs/method.md §1)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._constants import MEMORY_SHRINK, MEMORY_TEMPERATURE
from . import _checks, _reference
from ._backend import route


def memory_attention(
    z: Tensor,
    memory: Tensor,
    *,
    temperature: float = MEMORY_TEMPERATURE,
    shrink: float = MEMORY_SHRINK,
) -> Tensor:
    """Read the memory with shrunk softmax attention: ``z~ = normalize_l1(shrink(softmax(z M^T / t))) M``.

    Fused on the compiled backends (one pass between the two products); differentiable
    with respect to ``z`` and ``memory``; stable for small temperatures.

    Parameters
    ----------
    z
        ``(B, p)`` embeddings.
    memory
        ``(N_mem, p)`` memory items, same device and dtype.
    temperature
        Softmax temperature ``t > 0``.
    shrink
        Hard-shrinkage threshold ``l`` in ``[0, 1)``.

    Returns
    -------
    ``(B, p)`` reconstructed embeddings.
    """
    op = "memory_attention"
    _checks.matrix("z", op, z)
    _checks.matrix("memory", op, memory)
    _checks.same_device_dtype(op, z=z, memory=memory)
    if z.shape[1] != memory.shape[1]:
        raise ValueError(
            f"{op}: z has {z.shape[1]} features but memory has {memory.shape[1]}; "
            "the memory width must equal the embedding size"
        )
    temperature = _checks.positive(op, "temperature", temperature)
    if not 0.0 <= float(shrink) < 1.0:
        raise ValueError(f"{op}: shrink must be in [0, 1), got {shrink}")
    if route(z) == "torch":
        return _reference.memory_attention(z, memory, temperature, float(shrink))
    out, _ = torch.ops.acsleuth.memory_attention(z, memory, temperature, float(shrink))
    return out
