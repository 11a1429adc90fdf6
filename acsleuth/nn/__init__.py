"""Neural-network building blocks of the ACsleuth modules (docs/method.md §1)."""

from __future__ import annotations

from .blocks import ResidualBlock, dense_block
from .critic import Critic
from .generator import Decoder, Encoder, Generator
from .memory import MemoryBank
from .predictor import Predictor

__all__ = [
    "Critic",
    "Decoder",
    "Encoder",
    "Generator",
    "MemoryBank",
    "Predictor",
    "ResidualBlock",
    "dense_block",
]
