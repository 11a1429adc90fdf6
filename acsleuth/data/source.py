"""Validated expression data on a fixed gene panel: :func:`prepare` and :class:`ExpressionSource`."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

from .errors import DataError
from .genes import align
from .io import read
from .matrix import RowIndex, RowReader, open_matrix
from .scan import ValueScan, scan_values

logger = logging.getLogger("acsleuth")

TARGET_SUM = 1e4
RAW_COUNT_MIN_MAX = 50


class ExpressionSource:
    """A validated AnnData seen as log-normalised float32 rows on a fixed gene panel.

    Built by :func:`prepare`; the user's ``adata`` is never modified.

    Attributes
    ----------
    adata
        The user's object, untouched.
    name
        ``"reference"``/``"target"``: used in messages.
    genes
        The panel, in panel order.
    obs_names, var_names
        Unique cell and gene names of ``adata`` (made unique copies when needed).
    """

    def __init__(
        self,
        adata: AnnData,
        reader: RowReader,
        *,
        name: str,
        obs_names: pd.Index,
        var_names: pd.Index,
        genes: Sequence[str] | None,
        scale: np.ndarray | None,
    ) -> None:
        self.adata = adata
        self.name = name
        self.obs_names = obs_names
        self.var_names = var_names
        self._reader = reader
        self._scale = scale
        self._batch_scale: tuple[np.ndarray, np.ndarray] | None = None
        if genes is None:
            self.genes = [str(g) for g in var_names]
            self._columns = self._positions = np.arange(len(var_names))
        else:
            self._columns, self._positions = align(var_names, genes, name)
            self.genes = [str(g) for g in genes]
        self._identity = len(self.genes) == len(var_names) == self._columns.size and bool(
            np.array_equal(self._columns, np.arange(len(var_names)))
        )

    @property
    def log_normalize(self) -> bool:
        """Whether ``X`` looked like raw counts, so rows are normalised to 1e4 and log1p'd."""
        return self._scale is not None

    @property
    def n_obs(self) -> int:
        return self._reader.shape[0]

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    def __repr__(self) -> str:
        return (
            f"ExpressionSource({self.name}: {self.n_obs} cells x {self.n_genes} genes, "
            f"log_normalize={self.log_normalize}, backed={self._reader.backed})"
        )

    def rows(self, index: slice | np.ndarray) -> np.ndarray:
        """Rows ``index`` as a float32 C-contiguous ``(len(index), n_genes)`` array (a fresh copy).

        Panel genes absent from ``adata`` are zeros.
        """
        index = _row_index(index, self.n_obs)
        block = self._reader.take(index)
        if not self._identity:
            block = block[:, self._columns]
        dense = block.toarray() if sp.issparse(block) else block
        if self._identity:
            out = np.array(dense, dtype=np.float32, order="C")
        else:
            out = np.zeros((dense.shape[0], self.n_genes), dtype=np.float32)
            out[:, self._positions] = dense
        if self._scale is not None:
            out *= self._scale[index][:, None]
            np.log1p(out, out=out)
        if self._batch_scale is not None:
            scales, codes = self._batch_scale
            np.expm1(out, out=out)
            out *= np.exp(-scales[codes[index]])
            np.log1p(out, out=out)
        return out

    def with_batch_scale(self, scales: np.ndarray, codes: np.ndarray) -> ExpressionSource:
        """The same cells, each row's expression divided by its batch's per-gene scale as it
        is read: ``log1p(expm1(x) / exp(scales[codes[i]]))`` for row ``i`` (``scales``:
        ``(B, n_genes)`` log-scales, ``codes``: one batch per cell; see
        :mod:`acsleuth.stages.batch_scale`). Zeros stay zeros."""
        scales = np.asarray(scales, dtype=np.float32)
        codes = np.asarray(codes)
        if scales.ndim != 2 or scales.shape[1] != self.n_genes or codes.shape != (self.n_obs,):
            raise ValueError(
                f"with_batch_scale: scales must be (batches, {self.n_genes}) and codes "
                f"({self.n_obs},), got {scales.shape} and {codes.shape}"
            )
        out = copy.copy(self)
        out._batch_scale = (scales, codes)
        return out

    def with_genes(self, genes: Sequence[str]) -> ExpressionSource:
        """The same cells on another panel (matched by name; missing genes are zeros), read
        without any batch scale (:meth:`with_batch_scale` is on this panel's genes)."""
        return ExpressionSource(
            self.adata,
            self._reader,
            name=self.name,
            obs_names=self.obs_names,
            var_names=self.var_names,
            genes=genes,
            scale=self._scale,
        )


def _row_index(index: RowIndex, n: int) -> RowIndex:
    if isinstance(index, slice):
        start, stop, step = index.indices(n)
        return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
    positions = np.asarray(index)
    if positions.dtype == bool:
        if positions.shape != (n,):
            raise IndexError(f"a boolean row mask must have shape ({n},), got {positions.shape}")
        return np.flatnonzero(positions)
    if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
        raise IndexError("rows() takes a slice or a 1-D array of integer row positions")
    positions = positions.astype(np.int64, copy=False)
    if positions.size and (positions.min() < 0 or positions.max() >= n):
        raise IndexError(
            f"row positions must lie in [0, {n}), got [{positions.min()}, {positions.max()}]"
        )
    return positions


def prepare(
    data: str | os.PathLike | AnnData,
    *,
    genes: Sequence[str] | None = None,
    name: str = "target",
    layer: str | None = None,
) -> ExpressionSource:
    """Read, validate and (when ``genes`` is given) align expression data to a gene panel.

    Parameters
    ----------
    data
        AnnData (in memory or backed) or a path accepted by :func:`~acsleuth.data.read`.
    genes
        The panel to reindex to by name (e.g. the reference's genes); all genes when None.
    name
        ``"reference"`` or ``"target"``: named in every message.
    layer
        Read ``adata.layers[layer]`` instead of ``adata.X``.

    Raw counts (all values integers, maximum above 50) are normalised per cell to a total of 1e4
    over all genes, then log1p'd, as rows are read. Raises :class:`DataError` for empty data,
    NaN/infinite or negative values, a missing layer, or no gene in common with ``genes``.
    """
    try:
        adata = read(data)
    except DataError as err:
        raise DataError(f"{name}: {err}") from err
    where = f"{name}: X" if layer is None else f"{name}: layers[{layer!r}]"
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(
            f"{name} has {adata.n_obs} cells x {adata.n_vars} genes; it needs at least one of "
            "each (check the filtering that produced it)"
        )
    reader = open_matrix(_matrix(adata, layer, name), where)
    try:
        scan = scan_values(reader)
    except OSError as err:  # h5py, reading a backed file
        raise DataError(
            f"{where} could not be read ({err}); the file is damaged: copy it again or write it "
            "again with adata.write_h5ad"
        ) from err
    _check_values(scan, where)
    scale = None
    if scan.integer and scan.max > RAW_COUNT_MIN_MAX:
        logger.info(
            "%s looks like raw counts (integers, max %g): each cell is normalised to %g total "
            "counts over all %d genes and log1p'd as it is read (adata is not modified)",
            where,
            scan.max,
            TARGET_SUM,
            adata.n_vars,
        )
        scale = (TARGET_SUM / np.where(scan.totals > 0, scan.totals, TARGET_SUM)).astype(np.float32)
    return ExpressionSource(
        adata,
        reader,
        name=name,
        genes=genes,
        scale=scale,
        obs_names=_unique(adata.obs_names, "cell", "obs", name),
        var_names=_unique(adata.var_names, "gene", "var", name),
    )


def _matrix(adata: AnnData, layer: str | None, name: str) -> object:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise DataError(
            f"{name}: no layer {layer!r}; available layers: {sorted(adata.layers.keys()) or 'none'} "
            "(pass one of them, or layer=None for X)"
        )
    return adata.layers[layer]


def _check_values(scan: ValueScan, where: str) -> None:
    problems = [
        f"{problem} values in {int(cells.sum())} cells and {int(scan.bad_genes[problem].sum())} genes"
        for problem, cells in scan.bad_cells.items()
        if cells.any()
    ]
    if problems:
        raise DataError(
            f"{where} has {' and '.join(problems)}. acsleuth expects raw counts or "
            "log1p(normalize_total(counts)), which are finite and non-negative: pass those "
            "(e.g. layer='counts', or adata.raw.to_adata()) instead of scaled data, or drop or "
            "fix the affected cells and genes"
        )


def _unique(names: pd.Index, what: str, axis: str, name: str) -> pd.Index:
    if names.is_unique:
        return names
    warnings.warn(
        f"{name}: {int(names.duplicated().sum())} {what} names repeat earlier ones; acsleuth "
        f"makes them unique with suffixes '-1', '-2', ... in its own copy (adata is unchanged; "
        f"adata.{axis}_names_make_unique() does the same to it)",
        UserWarning,
        stacklevel=3,
    )
    return make_index_unique(names.astype(str))
