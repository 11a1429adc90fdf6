"""The user-facing model classes: :class:`ACsleuth` (save/load in :mod:`.persist`) and
:class:`OpenWorldAnnotator` (scDET)."""

from __future__ import annotations

from .._device import resolve_device
from ..stages.score import ScoreResult
from .acsleuth import ACsleuth
from .annotator import OpenWorldAnnotator

__all__ = ["ACsleuth", "OpenWorldAnnotator", "ScoreResult", "resolve_device"]
