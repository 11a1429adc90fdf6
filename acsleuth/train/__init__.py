"""Training loops (the WGAN-GP loop of stages I-III, the JEM loop of the classifier), their
shared divergence guard and checkpoints."""

from __future__ import annotations

from .adversarial import AdversarialConfig, AdversarialStep, gradient_penalty, train_adversarial
from .checkpoint import Checkpoint, TrainingInterrupted
from .guard import DivergenceGuard, TrainingDiverged

__all__ = [
    "AdversarialConfig",
    "AdversarialStep",
    "Checkpoint",
    "DivergenceGuard",
    "TrainingDiverged",
    "TrainingInterrupted",
    "gradient_penalty",
    "train_adversarial",
]
