"""acsleuth: fast, scalable detection, correction and subtyping of anomalous cells, and
classification against a labelled reference with an out-of-distribution score (CLAMS)."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads sleep when idle instead of spinning, unless the user chose otherwise. Set
# before torch loads its OpenMP runtime (no effect when torch was imported first). Beside a
# busy process, spinning threads made two-thread scoring runs up to 2.7x slower than passive
# ones, at random; on an idle machine both took the same time (benchmarks/RESULTS.md, issue 17).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
