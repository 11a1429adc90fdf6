"""acsleuth's fused ops: typed wrappers over the compiled kernels or the PyTorch fallbacks."""

from __future__ import annotations

from .. import _extension
from ._backend import backend
from .gamma_mmd import (
    default_bandwidths,
    gamma_matrix,
    gamma_mmd_loss,
    gaussian_pair_form,
    linear_pair_form,
)
from .kin_topk import kin_topk
from .memory_attention import memory_attention

if _extension.load():
    from . import _fake

    _fake.register()

__all__ = [
    "backend",
    "default_bandwidths",
    "gamma_matrix",
    "gamma_mmd_loss",
    "gaussian_pair_form",
    "kin_topk",
    "linear_pair_form",
    "memory_attention",
]
