"""One chunked pass over an expression matrix: bad values, integrality, maximum and cell totals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .matrix import RowReader, row_chunks

PROBLEMS = ("NaN or infinite", "negative")


@dataclass
class ValueScan:
    """What one pass over an ``n_obs x n_vars`` matrix found."""

    n_obs: int
    n_vars: int
    integer: bool = True
    max: float = 0.0
    totals: np.ndarray = field(init=False)
    """Per-cell sum over all genes (float64)."""
    bad_cells: dict[str, np.ndarray] = field(init=False)
    """For each problem in PROBLEMS, a mask of the cells holding such values."""
    bad_genes: dict[str, np.ndarray] = field(init=False)
    """For each problem in PROBLEMS, a mask of the genes holding such values."""

    def __post_init__(self) -> None:
        self.totals = np.zeros(self.n_obs, np.float64)
        self.bad_cells = {problem: np.zeros(self.n_obs, bool) for problem in PROBLEMS}
        self.bad_genes = {problem: np.zeros(self.n_vars, bool) for problem in PROBLEMS}


def scan_values(reader: RowReader) -> ValueScan:
    """Scan ``reader`` in row chunks; for sparse blocks only the stored values are looked at."""
    scan = ValueScan(*reader.shape)
    for chunk in row_chunks(*reader.shape):
        block = reader.take(chunk)
        if sp.issparse(block):
            _scan_sparse(scan, block, chunk)
        else:
            _scan_dense(scan, np.asarray(block), chunk)
    return scan


def _scan_dense(scan: ValueScan, block: np.ndarray, rows: slice) -> None:
    for problem, bad in _bad_values(block).items():
        if bad.any():
            scan.bad_cells[problem][rows] |= bad.any(axis=1)
            scan.bad_genes[problem] |= bad.any(axis=0)
    scan.totals[rows] = block.sum(axis=1, dtype=np.float64)
    _update_range(scan, block)


def _scan_sparse(scan: ValueScan, block: sp.csr_matrix, rows: slice) -> None:
    values = block.data
    entry_rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
    for problem, bad in _bad_values(values).items():
        if bad.any():
            scan.bad_cells[problem][rows.start + entry_rows[bad]] = True
            scan.bad_genes[problem][block.indices[bad]] = True
    scan.totals[rows] = np.bincount(entry_rows, weights=values, minlength=block.shape[0])
    _update_range(scan, values)


def _bad_values(values: np.ndarray) -> dict[str, np.ndarray]:
    nonfinite = ~np.isfinite(values)
    return {"NaN or infinite": nonfinite, "negative": (values < 0) & ~nonfinite}


def _update_range(scan: ValueScan, values: np.ndarray) -> None:
    if values.size == 0:
        return
    scan.max = max(scan.max, float(values.max()))
    if scan.integer and values.dtype.kind == "f":
        scan.integer = bool(np.array_equal(values, np.rint(values)))
