"""Boundary checks shared by the op wrappers: messages say what is wrong and how to fix it."""

from __future__ import annotations

import torch
from torch import Tensor


def matrix(name: str, op: str, t: object, *, min_rows: int = 1) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{op}: {name} must be 2-D (rows x features), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(
            f"{op}: {name} must be a floating-point tensor, got {t.dtype}; use .float()"
        )
    if t.shape[0] < min_rows:
        raise ValueError(f"{op}: {name} has {t.shape[0]} rows; it needs at least {min_rows}")
    if t.shape[1] == 0:
        raise ValueError(f"{op}: {name} has no columns (shape {tuple(t.shape)})")
    return t


def same_device_dtype(op: str, **tensors: Tensor) -> None:
    (first_name, first), *rest = tensors.items()
    for name, t in rest:
        if t.device != first.device:
            raise ValueError(
                f"{op}: {first_name} is on {first.device} but {name} is on {t.device}; "
                "move them to the same device"
            )
        if t.dtype != first.dtype:
            raise TypeError(
                f"{op}: {first_name} is {first.dtype} but {name} is {t.dtype}; cast them to one dtype"
            )


def positive(op: str, name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"{op}: {name} must be finite and > 0, got {value}")
    return value


def choice(op: str, name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{op}: {name} must be one of {options}, got {value!r}")
    return value


def probabilities(op: str, p: Tensor, n: int) -> Tensor:
    if not isinstance(p, Tensor):
        raise TypeError(f"{op}: p must be a torch.Tensor, got {type(p).__name__}")
    if p.numel() != n or (p.dim() == 2 and p.shape[1] != 1) or p.dim() > 2:
        raise ValueError(f"{op}: p must have shape ({n},) or ({n}, 1), got {tuple(p.shape)}")
    with torch.no_grad():
        if n and (bool((p < 0).any()) or bool((p > 1).any()) or not bool(torch.isfinite(p).all())):
            raise ValueError(f"{op}: p must hold probabilities in [0, 1]")
    return p.reshape(-1)
