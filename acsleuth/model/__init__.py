"""The user-facing model classes: :class:`ACsleuth` (save/load in :mod:`.persist`) and
:class:`CellTypeClassifier` (CLAMS)."""

from __future__ import annotations

from .._device import resolve_device
from ..stages.score import ScoreResult
from .acsleuth import ACsleuth
from .classifier import CellTypeClassifier

__all__ = ["ACsleuth", "CellTypeClassifier", "ScoreResult", "resolve_device"]
