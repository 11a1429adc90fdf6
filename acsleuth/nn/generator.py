"""The reconstruction generator: encoder, memory bank, decoder (docs/method.md §1)."""

from __future__ import annotations

from torch import Tensor, nn

from .._constants import MEMORY_SHRINK, MEMORY_TEMPERATURE, N_MEMORY
from .blocks import ResidualBlock, dense_block
from .memory import MemoryBank

HIDDEN = 512
EMBEDDING = 256
N_RESIDUAL = 2


class Encoder(nn.Module):
    """``(B, G) -> (B, 256)``: two dense blocks, then two residual blocks."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            dense_block(n_genes, HIDDEN),
            dense_block(HIDDEN, EMBEDDING),
            *[ResidualBlock(EMBEDDING) for _ in range(N_RESIDUAL)],
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """``(B, 256) -> (B, G)``: the encoder's mirror, ReLU output (expression is >= 0)."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *[ResidualBlock(EMBEDDING) for _ in range(N_RESIDUAL)],
            dense_block(EMBEDDING, HIDDEN),
            nn.Linear(HIDDEN, n_genes),
            nn.ReLU(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Generator(nn.Module):
    """``x -> (x_hat, z)`` with ``x_hat = D(mem(E(x)))``, or ``D(E(x))`` when the memory is off.

    ``n_memory``, ``temperature`` and ``shrink`` are the memory bank's size, softmax
    temperature and hard-shrinkage threshold (docs/method.md §1).
    """

    def __init__(
        self,
        n_genes: int,
        *,
        n_memory: int = N_MEMORY,
        temperature: float = MEMORY_TEMPERATURE,
        shrink: float = MEMORY_SHRINK,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(n_genes)
        self.memory = MemoryBank(n_memory, EMBEDDING, temperature=temperature, shrink=shrink)
        self.decoder = Decoder(n_genes)

    def forward(self, x: Tensor, *, use_memory: bool = True) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return self.decoder(self.memory(z) if use_memory else z), z
