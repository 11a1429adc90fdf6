"""Row access to an expression matrix, whatever its storage: dense or CSR, in memory or on disk."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import h5py
import numpy as np
import scipy.sparse as sp
from anndata.abc import CSCDataset, CSRDataset

from .errors import DataError

logger = logging.getLogger("acsleuth")

CHUNK_BYTES = 1 << 26
"""Dense float32 size of one row chunk in full passes over a matrix (validation, caches)."""

RowIndex = slice | np.ndarray


class RowReader:
    """Reads blocks of rows from a dense array or a CSR matrix, in memory or backed by h5py.

    Parameters
    ----------
    matrix
        ``np.ndarray``, ``h5py.Dataset``, in-memory CSR matrix or :class:`BackedCSR`.
    backed
        Whether ``matrix`` lives on disk; then array indices are read in increasing order.
    """

    def __init__(self, matrix: object, *, backed: bool) -> None:
        self.matrix = matrix
        self.backed = backed
        self.shape: tuple[int, int] = tuple(matrix.shape)

    def take(self, index: RowIndex) -> np.ndarray | sp.csr_matrix:
        """Rows ``index`` (a step-1 slice or int64 positions) in the requested order.

        Dense results may be views of the stored array: copy before writing to them.
        """
        if not self.backed or isinstance(index, slice):
            return self.matrix[index]
        unique, inverse = np.unique(index, return_inverse=True)
        block = self.matrix[unique]
        if unique.size == index.size and np.array_equal(unique, index):
            return block
        return block[inverse]


class BackedCSR:
    """A CSR matrix stored in an h5ad group, read by runs of consecutive rows.

    Keeps ``indptr`` in memory and reads ``data``/``indices`` directly, avoiding the per-call
    overhead of anndata's backed indexing (several times slower for minibatches).
    """

    def __init__(self, dataset: CSRDataset) -> None:
        self.shape: tuple[int, int] = tuple(dataset.shape)
        self.dtype = dataset.dtype
        self._data = dataset.group["data"]
        self._indices = dataset.group["indices"]
        self._indptr = np.asarray(dataset.group["indptr"][:], dtype=np.int64)

    def __getitem__(self, index: RowIndex) -> sp.csr_matrix:
        """Rows ``index``: a slice or increasing unique positions."""
        rows = np.arange(*index.indices(self.shape[0])) if isinstance(index, slice) else index
        if rows.size == 0:
            return sp.csr_matrix((0, self.shape[1]), dtype=self.dtype)
        indptr = np.concatenate([[0], np.cumsum(self._indptr[rows + 1] - self._indptr[rows])])
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = self._indptr[rows[np.r_[0, breaks]]]
        stops = self._indptr[rows[np.r_[breaks - 1, rows.size - 1]] + 1]
        data, indices = (
            np.concatenate([stored[a:b] for a, b in zip(starts, stops, strict=True)])
            for stored in (self._data, self._indices)
        )
        return sp.csr_matrix((data, indices, indptr), shape=(rows.size, self.shape[1]))


def open_matrix(x: object, where: str) -> RowReader:
    """Wrap an AnnData matrix for row access; other sparse formats are converted to CSR once.

    ``where`` names the matrix in error messages (e.g. ``"reference: X"``).
    """
    if x is None:
        raise DataError(
            f"{where} is empty (None); store the expression matrix there or pick a layer"
        )
    if isinstance(x, CSRDataset):
        return RowReader(BackedCSR(x), backed=True)
    if isinstance(x, CSCDataset):
        logger.info(
            "%s is a backed CSC matrix; loading it into memory as CSR for row access "
            "(save it as CSR to stream it from disk)",
            where,
        )
        return RowReader(x.to_memory().tocsr(), backed=False)
    if sp.issparse(x):
        if x.format != "csr":
            logger.info(
                "%s is a %s matrix; using a CSR copy for row access", where, x.format.upper()
            )
            x = x.tocsr()
        return RowReader(_numeric(x, where), backed=False)
    if isinstance(x, h5py.Dataset):
        return RowReader(_numeric(x, where), backed=True)
    if isinstance(x, np.ndarray):
        return RowReader(_numeric(np.asarray(x), where), backed=False)
    raise DataError(
        f"{where} is a {type(x).__module__}.{type(x).__name__}; acsleuth reads numpy arrays, "
        "scipy sparse matrices and backed h5ad matrices: convert it first (e.g. np.asarray(X), "
        "or X.compute() for a dask array)"
    )


def _numeric(x: np.ndarray | h5py.Dataset | sp.csr_matrix, where: str) -> object:
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise DataError(
            f"{where} must be a 2-D numeric matrix, got {x.ndim}-D of dtype {x.dtype}; "
            "store numbers (e.g. X.astype(np.float32))"
        )
    return x


def row_chunks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Consecutive row slices whose dense float32 size is at most ``CHUNK_BYTES`` (one row at least)."""
    size = max(1, CHUNK_BYTES // max(1, 4 * n_cols))
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))
