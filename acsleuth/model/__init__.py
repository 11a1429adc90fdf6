"""The user-facing model classes: :class:`ACsleuth` (save/load in :mod:`.persist`),
:class:`CellTypeClassifier` (CLAMS) and :class:`OpenWorldAnnotator` (scDET)."""

from __future__ import annotations

from .._device import resolve_device
from ..stages.score import ScoreResult
from .acsleuth import ACsleuth
from .annotator import OpenWorldAnnotator
from .classifier import CellTypeClassifier

__all__ = ["ACsleuth", "CellTypeClassifier", "OpenWorldAnnotator", "ScoreResult", "resolve_device"]
