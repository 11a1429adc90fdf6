"""Gene panels: alignment by name and highly variable genes."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _helpers import names

from acsleuth.data import DataError, highly_variable_genes, prepare


def test_reordered_panel(make_adata, lognorm):
    order = np.random.default_rng(2).permutation(25)
    genes = [f"gene{i}" for i in order]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = prepare(make_adata(lognorm, "csr"), genes=genes)
    assert source.genes == genes and source.n_genes == 25
    np.testing.assert_array_equal(source.rows(slice(None)), lognorm[:, order])


def test_partial_overlap_warns_and_fills_zeros(make_adata, lognorm):
    genes = ["gene3", "other1", "gene0", "other2", "gene24"]
    with pytest.warns(
        UserWarning,
        match=r"^target: 3 of the 5 panel genes were found .* the 2 missing "
        r"\(e.g. 'other1', 'other2'\) are filled with zeros",
    ):
        source = prepare(make_adata(lognorm, "csc"), genes=genes)
    rows = source.rows(slice(None))
    np.testing.assert_array_equal(rows[:, [0, 2, 4]], lognorm[:, [3, 0, 24]])
    assert not rows[:, [1, 3]].any()


def test_no_overlap(make_adata, lognorm):
    genes = [f"ENSG{i:011d}" for i in range(10)]
    with pytest.raises(
        DataError,
        match=r"^target: none of the 10 panel genes \(e.g. 'ENSG00000000000', .*\) "
        r"is among its var_names \(e.g. 'gene0', 'gene1', 'gene2', ...\)\. "
        r"The two may use different gene identifiers \(e.g. Ensembl ids vs gene symbols\)",
    ):
        prepare(make_adata(lognorm), genes=genes)


def test_panel_with_repeats(make_adata, lognorm):
    with pytest.raises(DataError, match=r"the gene panel repeats 1 gene name"):
        prepare(make_adata(lognorm), genes=["gene1", "gene2", "gene1"])


def test_with_genes_keeps_the_cells_and_normalisation(make_adata, counts):
    source = prepare(make_adata(counts, "backed-csr"), name="reference")
    subset = source.with_genes(["gene7", "gene2"])
    assert subset.log_normalize and subset.obs_names.equals(source.obs_names)
    np.testing.assert_array_equal(subset.rows(slice(None)), source.rows(slice(None))[:, [7, 2]])
    with pytest.warns(UserWarning, match=r"^reference: 1 of the 2 panel genes"):
        source.with_genes(["gene7", "nope"])


def _scanpy_hvg(x: np.ndarray, genes: list[str], n_top_genes: int) -> list[str]:
    copy = ad.AnnData(X=x.copy(), var=pd.DataFrame(index=genes))
    sc.pp.highly_variable_genes(copy, flavor="seurat", n_top_genes=n_top_genes)
    return list(copy.var_names[copy.var["highly_variable"]])


@pytest.fixture
def wide_counts() -> np.ndarray:
    """300 cells x 400 genes of overdispersed counts (gene-specific means and dispersions)."""
    rng = np.random.default_rng(3)
    means = rng.gamma(1.0, 2.0, size=400)
    shape = rng.uniform(0.2, 5.0, size=400)
    return rng.poisson(rng.gamma(shape, means / shape, size=(300, 400))).astype(np.float32)


@pytest.mark.parametrize("fmt", ["csr", "backed-dense"])
def test_hvg_matches_scanpy(make_adata, monkeypatch, wide_counts, fmt):
    from acsleuth.data import matrix

    monkeypatch.setattr(matrix, "CHUNK_BYTES", 4 * 400 * 64)  # several chunks
    source = prepare(make_adata(wide_counts, fmt), name="reference")
    assert source.log_normalize
    chosen = highly_variable_genes(source, n_top_genes=50)
    copy = ad.AnnData(X=wide_counts.copy())
    sc.pp.normalize_total(copy, target_sum=1e4)
    sc.pp.log1p(copy)
    assert len(chosen) == 50
    assert chosen == _scanpy_hvg(copy.X, source.genes, 50)
    assert chosen == [g for g in source.genes if g in set(chosen)]


def test_hvg_on_a_panel_is_in_panel_order(make_adata, wide_counts):
    source = prepare(make_adata(wide_counts)).with_genes(names("gene", 400)[::-1])
    chosen = highly_variable_genes(source, n_top_genes=40)
    assert chosen == _scanpy_hvg(source.rows(slice(None)), source.genes, 40)
    assert [int(g[4:]) for g in chosen] == sorted((int(g[4:]) for g in chosen), reverse=True)


def test_hvg_on_an_atlas_uses_a_seeded_sample_of_cells(make_adata, wide_counts):
    source = prepare(make_adata(wide_counts, "backed-csr"), name="reference")
    chosen = highly_variable_genes(source, n_top_genes=50, max_cells=120, seed=4)
    rows = np.sort(np.random.default_rng(4).choice(300, 120, replace=False))
    assert chosen == _scanpy_hvg(source.rows(rows), source.genes, 50)
    assert chosen != highly_variable_genes(source, n_top_genes=50)  # not all 300 cells
    assert chosen == highly_variable_genes(source, n_top_genes=50, max_cells=120, seed=4)


def test_hvg_keeps_small_panels_whole(make_adata, lognorm):
    source = prepare(make_adata(lognorm))
    assert highly_variable_genes(source) == source.genes
    assert highly_variable_genes(source, n_top_genes=25) == source.genes


@pytest.mark.parametrize("n_top_genes", [0, -3])
def test_hvg_needs_a_positive_count(make_adata, lognorm, n_top_genes):
    with pytest.raises(DataError, match=rf"n_top_genes must be at least 1, got {n_top_genes}"):
        highly_variable_genes(prepare(make_adata(lognorm)), n_top_genes)
