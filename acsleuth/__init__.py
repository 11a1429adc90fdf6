"""acsleuth: fast, scalable detection, correction and subtyping of anomalous cells, and
classification against a labelled reference with an out-of-distribution score (CLAMS)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import data, datasets, metrics, ops, pl, report, tl
from .model import ACsleuth, CellTypeClassifier, OpenWorldAnnotator

try:
    __version__ = version("acsleuth")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

__all__ = [
    "ACsleuth",
    "CellTypeClassifier",
    "OpenWorldAnnotator",
    "__version__",
    "data",
    "datasets",
    "metrics",
    "ops",
    "pl",
    "report",
    "tl",
]
