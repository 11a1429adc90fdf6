"""The divergence guard shared by acsleuth's training loops (the WGAN-GP loop, the JEM loop).

A loop snapshots its training state at the start of every epoch. When the epoch's mean losses
are not finite, or the watched loss explodes past a bound, the guard restores the snapshot and
halves the learning rate, and the loop retries the epoch; after ``max_retries`` restores in one
stage it raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._logging import logger
from .checkpoint import Stateful, restore


class TrainingDiverged(RuntimeError):
    """A stage's losses stayed non-finite or exploding after every retry of the guard."""


def divergence(losses: Mapping[str, float], watch: str, max_loss: float) -> str | None:
    """What is wrong with an epoch's mean losses, or None when training may go on."""
    bad = [f"{name} loss {value}" for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        return ", ".join(bad)
    if abs(losses[watch]) > max_loss:
        return f"{watch} loss {losses[watch]:.3g} exploded past {max_loss:.3g}"
    return None


@dataclass
class DivergenceGuard:
    """Restore-and-halve on diverged epochs, a bounded number of times per stage.

    Parameters
    ----------
    desc
        The stage's name, in messages.
    lr
        The base learning rate (messages only; the loop applies ``lr * lr_scale``).
    watch, max_loss
        An epoch whose mean ``|losses[watch]|`` passes ``max_loss`` has diverged.
    max_retries
        Restores allowed before :class:`TrainingDiverged` is raised.
    lr_scale
        The current learning-rate factor (a resumed stage starts from its checkpoint's).
    """

    desc: str
    lr: float
    watch: str
    max_loss: float
    max_retries: int
    lr_scale: float = 1.0
    retries: int = 0

    def diverged(
        self,
        losses: Mapping[str, float],
        epoch: int,
        tracked: Mapping[str, Stateful],
        good: Mapping[str, Any],
    ) -> bool:
        """Whether epoch ``epoch`` (0-based) diverged; if so ``tracked`` is back at ``good``
        and ``lr_scale`` is halved. Raises :class:`TrainingDiverged` past ``max_retries``."""
        problem = divergence(losses, self.watch, self.max_loss)
        if problem is None:
            return False
        self.retries += 1
        if self.retries > self.max_retries:
            raise TrainingDiverged(
                f"{self.desc}: training diverged at epoch {epoch + 1} ({problem}) after "
                f"{self.max_retries} restarts from the last good state, each at half the "
                f"learning rate (last {self.lr * self.lr_scale:.3g}); check the input for extreme "
                "values (unnormalised data?) or lower the learning rate"
            )
        restore(tracked, good)
        self.lr_scale /= 2
        logger.warning(
            "%s: epoch %d diverged (%s); restored the state before it and halved the learning "
            "rate to %.3g (retry %d of %d)",
            self.desc,
            epoch + 1,
            problem,
            self.lr * self.lr_scale,
            self.retries,
            self.max_retries,
        )
        return True
