"""The WGAN-GP training loop shared by the adversarial stages (I, II and III), and its checkpoints."""

from __future__ import annotations

from .adversarial import (
    AdversarialConfig,
    AdversarialStep,
    TrainingDiverged,
    gradient_penalty,
    train_adversarial,
)
from .checkpoint import Checkpoint, TrainingInterrupted

__all__ = [
    "AdversarialConfig",
    "AdversarialStep",
    "Checkpoint",
    "TrainingDiverged",
    "TrainingInterrupted",
    "gradient_penalty",
    "train_adversarial",
]
