"""The fused embedding of stage IV (docs/method.md §4): tokens ``E(x)`` and ``E(x - x_hat)``
of each anomaly, fused by a small transformer into ``z*``."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..nn.generator import EMBEDDING

N_TOKENS = 2  # z and zeta


class FusionEncoder(nn.Module):
    """``x (B, G), r (B, G) -> z* (B, p)``: tokens ``E(x)``, ``E(r)`` fused by a transformer.

    ``E`` is a deep copy of ``encoder`` (module I is left untouched) and is fine-tuned with
    the rest, except that its BatchNorm layers keep module I's running statistics: batch
    statistics would mix the expression and residual tokens and differ between training
    and evaluation.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        dim: int = EMBEDDING,
        n_layers: int = 3,
        n_heads: int = 4,
        feedforward: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.token_type = nn.Parameter(torch.empty(N_TOKENS, dim).normal_(std=0.02))
        layer = nn.TransformerEncoderLayer(dim, n_heads, feedforward, dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def train(self, mode: bool = True) -> FusionEncoder:
        super().train(mode)
        freeze_batchnorm(self.encoder)
        return self

    def tokens(self, x: Tensor, r: Tensor) -> Tensor:
        """``(B, 2, p)``: ``[E(x), E(r)]`` plus the token-type embeddings."""
        n = x.shape[0]
        z = self.encoder(torch.cat([x, r])).view(N_TOKENS, n, -1).transpose(0, 1)
        return z + self.token_type

    def forward(self, x: Tensor, r: Tensor) -> Tensor:
        return self.transformer(self.tokens(x, r)).mean(dim=1)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode (running statistics, no updates)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


@torch.no_grad()
def residuals(generator: nn.Module, x: Tensor, *, device: torch.device, batch_size: int) -> Tensor:
    """``r = x - x_hat (N, G)``, ``x_hat`` from ``generator(x) -> (x_hat, z)`` in eval mode."""
    generator.eval()
    parts = []
    for part in x.split(batch_size):
        part = part.to(device, torch.float32)
        parts.append((part - generator(part)[0]).to(x.device, x.dtype))
    return torch.cat(parts)


__all__ = ["N_TOKENS", "FusionEncoder", "freeze_batchnorm", "residuals"]
