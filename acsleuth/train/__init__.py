"""The WGAN-GP training loop shared by the adversarial stages (I, II and III)."""

from __future__ import annotations

from .adversarial import AdversarialConfig, AdversarialStep, gradient_penalty, train_adversarial

__all__ = ["AdversarialConfig", "AdversarialStep", "gradient_penalty", "train_adversarial"]
