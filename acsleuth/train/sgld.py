"""Negative samples of an energy-based model: SGLD chains kept in a persistent replay buffer
(docs/method.md §8.1), and CLAMS' two regularisers of the generative loss (ELU clipping, on/off gating)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

Clip = Literal["elu", "none"]
CLIPS: tuple[Clip, ...] = ("elu", "none")


def clip_generative_loss(loss: Tensor, clip: Clip) -> Tensor:
    """``ELU(L_g)`` (floor -1: a large negative ``L_g`` stops pushing) or ``L_g`` unchanged."""
    if clip == "elu":
        return nn.functional.elu(loss)
    if clip == "none":
        return loss
    raise ValueError(f"clip must be one of {CLIPS}, got {clip!r}")


class Gate:
    """Stochastic pass-through of the generative loss: on with probability ``p_on`` per step,
    drawn from the gate's own generator (seeded; a checkpoint holds its state)."""

    def __init__(self, p_on: float, seed: int) -> None:
        if not 0.0 < p_on <= 1.0:
            raise ValueError(f"p_on must be in (0, 1], got {p_on}")
        self.p_on = float(p_on)
        self._rng = np.random.default_rng(seed)

    def __call__(self) -> bool:
        return bool(self._rng.random() < self.p_on)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


def sgld(
    log_density: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    steps: int,
    step_size: float,
    noise: float,
) -> Tensor:
    """``steps`` Langevin steps ``x <- x + step_size * d log_density(x)/dx + noise * N(0, I)``
    up the (unnormalised) log-density, per row; returns detached samples."""
    x = x.detach()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(log_density(x).sum(), x)
        x = (x + step_size * grad + noise * torch.randn_like(x)).detach()
    return x


Start = Literal["noise", "data"]
STARTS: tuple[Start, ...] = ("noise", "data")


def noise_start(dim: int, device: torch.device | str) -> Callable[[int], Tensor]:
    """The start distribution N(0, I) of ``dim``-dimensional chains."""
    return lambda n: torch.randn(n, dim, device=device)


class ReplayBuffer:
    """``size`` persistent SGLD chains drawn from ``start`` (``n -> (n, dim)`` samples of the
    start distribution, in the standardised input space); :meth:`draw` re-initialises each
    drawn chain with probability ``reinit``. The random draws use torch's global generator."""

    def __init__(self, size: int, start: Callable[[int], Tensor], *, reinit: float) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be at least 1, got {size}")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit must be in [0, 1], got {reinit}")
        self.reinit = float(reinit)
        self.start = start
        self.samples = start(size)

    def draw(self, n: int) -> tuple[Tensor, Tensor]:
        """``(index, x)``: ``n`` chains drawn with replacement, a ``reinit`` share restarted."""
        index = torch.randint(0, self.samples.shape[0], (n,), device=self.samples.device)
        x = self.samples[index]
        fresh = torch.rand(n, device=x.device) < self.reinit
        x = torch.where(fresh[:, None], self.start(n), x)
        return index, x

    def put(self, index: Tensor, x: Tensor) -> None:
        self.samples[index] = x.detach()

    def state_dict(self) -> dict[str, Tensor]:
        return {"samples": self.samples}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.samples = state["samples"].to(self.samples.device).clone()
