"""acsleuth: fast, scalable detection, correction and subtyping of anomalous cells."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import data, datasets, metrics, ops, pl, report, tl
from .model import ACsleuth, OpenWorldAnnotator

try:
    __version__ = version("acsleuth")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

__all__ = ["ACsleuth", "OpenWorldAnnotator", "__version__", "data", "datasets", "metrics", "ops", "pl", "report", "tl"]
