"""The energy-based classifier of CLAMS (docs/method.md §8.1): a residual MLP whose logits define both
p(y|x) (softmax) and an unnormalised density p(x) ~ exp(LSE(x))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import linear

MIN_SCALE = 1e-3  # per-gene standard deviation floor of the input standardisation


def lse(logits: Tensor) -> Tensor:
    """``LSE(x) = logsumexp_k f(x)_k = -E(x)``: high where the model puts density."""
    return torch.logsumexp(logits, dim=1)


def ood_score(logits: Tensor) -> Tensor:
    """``-LSE(x)``, the energy: higher = more out of distribution."""
    return -lse(logits)


class ELUResidualBlock(nn.Module):
    """``ELU(x + Linear(Dropout(ELU(Linear(x)))))``: no normalisation, which would couple the
    cells of a batch (SGLD chains must not see each other)."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(linear(dim, dim), nn.ELU(), nn.Dropout(dropout), linear(dim, dim))
        self.act = nn.ELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class EnergyClassifier(nn.Module):
    """``(B, G)`` log-normalised expression -> ``(B, K)`` logits.

    Inputs are standardised per gene with the reference's mean and scale (buffers, saved with
    the weights) and optionally clipped; :meth:`logits` takes standardised inputs, the space
    SGLD samples in. Each
    stage ``i`` is a ``Linear`` to ``widths[i]`` followed by ``blocks[i]`` residual blocks.
    """

    def __init__(
        self,
        n_genes: int,
        n_classes: int,
        *,
        widths: Sequence[int] = (800, 200),
        blocks: Sequence[int] = (2, 4),
        dropout: float = 0.0,
        max_value: float | None = None,
    ) -> None:
        super().__init__()
        self.max_value = max_value
        if len(widths) != len(blocks) or not widths:
            raise ValueError(
                f"widths {tuple(widths)} and blocks {tuple(blocks)} must pair up, one each"
            )
        layers: list[nn.Module] = []
        n_in = n_genes
        for width, n_blocks in zip(widths, blocks, strict=True):
            layers += [linear(n_in, width), nn.ELU()]
            layers += [ELUResidualBlock(width, dropout) for _ in range(n_blocks)]
            n_in = width
        layers.append(linear(n_in, n_classes))
        self.body = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(n_genes))
        self.register_buffer("scale", torch.ones(n_genes))

    def set_standardisation(self, mean: Tensor, std: Tensor) -> None:
        """Per-gene mean and standard deviation of the training cells (floored at 1e-3)."""
        self.mean.copy_(mean)
        self.scale.copy_(std.clamp_min(MIN_SCALE))

    def standardise(self, x: Tensor) -> Tensor:
        """``(x - mean) / scale``, clipped to ``[-max_value, max_value]`` when that is set (as
        ``scanpy.pp.scale(max_value=...)``: rare genes otherwise reach z of 100 and more)."""
        z = (x - self.mean) / self.scale
        return z if self.max_value is None else z.clamp(-self.max_value, self.max_value)

    def logits(self, z: Tensor) -> Tensor:
        """Logits of standardised inputs ``z``."""
        return self.body(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.standardise(x))
