"""The data layer: read, validate, align and batch single-cell expression data (docs/method.md §0)."""

from __future__ import annotations

from .errors import DataError
from .genes import highly_variable_genes
from .io import read
from .loader import MinibatchLoader
from .source import ExpressionSource, prepare

__all__ = [
    "DataError",
    "ExpressionSource",
    "MinibatchLoader",
    "highly_variable_genes",
    "prepare",
    "read",
]
