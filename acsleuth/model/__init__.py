"""The user-facing model classes: :class:`ACsleuth` (save/load in :mod:`.persist`)."""

from __future__ import annotations

from ..stages.score import ScoreResult
from .acsleuth import ACsleuth, resolve_device

__all__ = ["ACsleuth", "ScoreResult", "resolve_device"]
