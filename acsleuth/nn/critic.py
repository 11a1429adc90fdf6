"""The spectral-normalised critic of the WGAN-GP (docs/method.md §1)."""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import ResidualBlock, dense_block

CRITIC_HIDDEN = 256
CRITIC_OUT = 16


class Critic(nn.Module):
    """``(B, G) -> (B, 16)``; no batch norm (it would couple the cells of a gradient penalty)."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            dense_block(n_genes, CRITIC_HIDDEN, norm=False, spectral=True),
            dense_block(CRITIC_HIDDEN, CRITIC_OUT, norm=False, spectral=True),
            ResidualBlock(CRITIC_OUT, norm=False, spectral=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
