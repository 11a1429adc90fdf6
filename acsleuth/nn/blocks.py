"""Dense and residual blocks shared by the generator, critic and predictor."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

NEGATIVE_SLOPE = 0.2
DROPOUT = 0.1


def linear(n_in: int, n_out: int, *, spectral: bool = False) -> nn.Linear:
    """A linear layer, spectral-normalised when ``spectral``."""
    layer = nn.Linear(n_in, n_out)
    return spectral_norm(layer) if spectral else layer


def dense_block(
    n_in: int, n_out: int, *, norm: bool = True, spectral: bool = False
) -> nn.Sequential:
    """``Linear -> [BatchNorm] -> LeakyReLU(0.2) -> Dropout(0.1)``."""
    layers: list[nn.Module] = [linear(n_in, n_out, spectral=spectral)]
    if norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers += [nn.LeakyReLU(NEGATIVE_SLOPE), nn.Dropout(DROPOUT)]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """``LeakyReLU(x + f(x))`` with ``f = dense_block -> Linear`` (docs/method.md §1)."""

    def __init__(self, dim: int, *, norm: bool = True, spectral: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            dense_block(dim, dim, norm=norm, spectral=spectral), linear(dim, dim, spectral=spectral)
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))
