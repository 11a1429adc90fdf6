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
        raise DataError(no_shared_genes(var_names, panel, name))
    if not found.all():
        warnings.warn(
            f"{name}: {int(found.sum())} of the {len(panel)} panel genes were found in its "
            f"var_names; the {int((~found).sum())} missing (e.g. {_examples(panel[~found])}) are "
            f"filled with zeros{_case_hint(var_names, panel[~found], 'of them ')}",
            UserWarning,
            stacklevel=4,
        )
    return columns[found].astype(np.int64), np.flatnonzero(found)


def no_shared_genes(var_names: pd.Index, panel: pd.Index, name: str) -> str:
    """The message for a matrix sharing no gene with ``panel``, saying when the names match
    only ignoring case, or when one side holds Ensembl IDs and the other gene symbols."""
    message = (
        f"{name}: none of the {len(panel)} panel genes (e.g. {_examples(panel)}) is among its "
        f"var_names (e.g. {_examples(var_names)})"
    )
    hint = _case_hint(var_names, panel)
    if hint:
        return (
            f"{message}{hint}: write both with the same capitalisation, e.g. "
            "adata.var_names = adata.var_names.str.upper() on both"
        )
    message += ". The two may use different gene identifiers (e.g. Ensembl ids vs gene symbols)"
    ensembl_panel, ensembl_var = _looks_ensembl(panel), _looks_ensembl(var_names)
    if ensembl_panel != ensembl_var:
        kind = "its var_names look like Ensembl IDs and the panel's like gene symbols"
        if ensembl_panel:
            kind = "the panel genes look like Ensembl IDs and its var_names like gene symbols"
        message = f"{message}, and here {kind}"
    return (
        f"{message}: give both AnnData objects the same kind of var_names, e.g. "
        "adata.var_names = adata.var['gene_symbols']"
    )


def _case_hint(var_names: pd.Index, panel: pd.Index, what: str = "") -> str:
    """``"; N match ... only ignoring case (e.g. 'A' vs 'a')"`` for the ``panel`` genes that are
    in ``var_names`` only when case is ignored; empty when there are none."""
    folded: dict[str, str] = {}
    for name in map(str, var_names):
        folded.setdefault(name.casefold(), name)
    hits = [
        (gene, folded[gene.casefold()])
        for gene in map(str, panel)
        if folded.get(gene.casefold(), gene) != gene
    ]
    if not hits:
        return ""
    return (
        f"; {len(hits)} of the {len(panel)} {what}match its var_names only ignoring case "
        f"(e.g. {hits[0][0]!r} vs {hits[0][1]!r})"
    )


def _looks_ensembl(names: pd.Index) -> bool:
    """Whether most ``names`` look like Ensembl gene IDs (``ENSG00000139618``, ``ENSMUSG...``)."""
    return bool(len(names)) and float(names.astype(str).str.match(r"ENS[A-Z]*G\d{5,}").mean()) > 0.5


def _examples(names: pd.Index, k: int = 3) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:k])
    return f"{shown}, ..." if len(names) > k else shown


def highly_variable_genes(
    source: ExpressionSource,
    n_top_genes: int = 3000,
    *,
    max_cells: int = HVG_MAX_CELLS,
    seed: int = 0,
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
    blocks = [sp.csr_matrix(source.rows(rows[i : i + step])) for i in range(0, rows.size, step)]
    copy = AnnData(
        X=sp.vstack(blocks, format="csr"),
        obs=pd.DataFrame(index=source.obs_names[rows]),
        var=pd.DataFrame(index=pd.Index(source.genes)),
    )
    sc.pp.highly_variable_genes(copy, flavor="seurat", n_top_genes=n_top_genes)
    chosen = copy.var["highly_variable"].to_numpy()
    return [gene for gene, keep in zip(source.genes, chosen, strict=True) if keep]
