"""Gene panels: matching a matrix's genes to a panel by name, and highly variable genes."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .errors import DataError
from .matrix import row_chunks

if TYPE_CHECKING:
    from .source import ExpressionSource

HVG_MAX_CELLS = 100_000
"""Cells at most that highly variable genes are chosen on."""


def align(var_names: pd.Index, genes: Sequence[str], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Match ``genes`` to the unique ``var_names`` by name.

    Returns
    -------
    columns, positions
        For every gene found: its column in the matrix and its position in ``genes``.
        Genes not found are left out (their panel columns stay zero); a warning names how many.
    """
    panel = pd.Index([str(g) for g in genes])
    if panel.empty:
        raise DataError(f"{name}: the gene panel is empty; pass at least one gene name")
    if not panel.is_unique:
        raise DataError(
            f"{name}: the gene panel repeats {int(panel.duplicated().sum())} gene name(s), e.g. "
            f"{_examples(panel[panel.duplicated()])}; pass each gene once"
        )
    columns = var_names.get_indexer(panel)
    found = columns >= 0
    if not found.any():
        raise DataError(
            f"{name}: none of the {len(panel)} panel genes (e.g. {_examples(panel)}) is among its "
            f"var_names (e.g. {_examples(var_names)}). The two may use different gene identifiers "
            "(e.g. Ensembl ids vs gene symbols): give both AnnData objects the same kind of "
            "var_names, e.g. adata.var_names = adata.var['gene_symbols']"
        )
    if not found.all():
        warnings.warn(
            f"{name}: {int(found.sum())} of the {len(panel)} panel genes were found in its "
            f"var_names; the {int((~found).sum())} missing (e.g. {_examples(panel[~found])}) are "
            "filled with zeros",
            UserWarning,
            stacklevel=4,
        )
    return columns[found].astype(np.int64), np.flatnonzero(found)


def _examples(names: pd.Index, k: int = 3) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:k])
    return f"{shown}, ..." if len(names) > k else shown


def highly_variable_genes(
    source: ExpressionSource, n_top_genes: int = 3000, *, max_cells: int = HVG_MAX_CELLS, seed: int = 0
) -> list[str]:
    """The ``n_top_genes`` most variable panel genes (scanpy, flavor ``"seurat"``), in panel order.

    Every panel gene is returned when the panel has at most ``n_top_genes`` genes. Otherwise
    the log-normalised rows of at most ``max_cells`` cells (all cells, or that many drawn
    with ``seed``) are collected chunk by chunk into an in-memory CSR copy for scanpy, so
    memory stays bounded on atlas-sized references.
    """
    import scanpy as sc

    n_top_genes = int(n_top_genes)
    if n_top_genes < 1:
        raise DataError(f"{source.name}: n_top_genes must be at least 1, got {n_top_genes}")
    if source.n_genes <= n_top_genes:
        return list(source.genes)
    rows = np.arange(source.n_obs)
    if source.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(source.n_obs, max_cells, replace=False))
    step = next(row_chunks(rows.size, source.n_genes)).stop
    blocks = [sp.csr_matrix(source.rows(rows[i:i + step])) for i in range(0, rows.size, step)]
    copy = AnnData(
        X=sp.vstack(blocks, format="csr"),
        obs=pd.DataFrame(index=source.obs_names[rows]),
        var=pd.DataFrame(index=pd.Index(source.genes)),
    )
    sc.pp.highly_variable_genes(copy, flavor="seurat", n_top_genes=n_top_genes)
    chosen = copy.var["highly_variable"].to_numpy()
    return [gene for gene, keep in zip(source.genes, chosen, strict=True) if keep]
