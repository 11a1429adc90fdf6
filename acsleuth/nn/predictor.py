"""The anomaly predictor ``f_p: R^G -> (0, 1)`` of the MMD score (docs/method.md §1.1)."""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import dense_block


class Predictor(nn.Module):
    """``(B, G) -> (B,)`` anomaly logits; ``sigmoid`` of them are the probabilities ``p``.

    Logits, not probabilities, rank the cells: they do not saturate into ties.
    """

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            dense_block(n_genes, 512), dense_block(512, 256), nn.Linear(256, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
