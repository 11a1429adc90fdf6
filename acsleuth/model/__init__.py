"""The user-facing model classes: :class:`ACsleuth` (save/load in :mod:`.persist`)."""

from __future__ import annotations

from .._device import resolve_device
from ..stages.score import ScoreResult
from .acsleuth import ACsleuth

__all__ = ["ACsleuth", "ScoreResult", "resolve_device"]
