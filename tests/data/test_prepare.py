"""prepare(): raw-count detection, bad values, empty data, duplicate names, layers."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import FORMATS

from acsleuth.data import DataError, matrix, prepare


def _scanpy_lognorm(counts: np.ndarray) -> np.ndarray:
    copy = ad.AnnData(X=counts.copy())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Some cells have zero counts")
        sc.pp.normalize_total(copy, target_sum=1e4)
    sc.pp.log1p(copy)
    return copy.X


@pytest.mark.parametrize("fmt", FORMATS)
def test_raw_counts_are_normalised_as_scanpy_does(make_adata, counts, caplog, fmt):
    adata = make_adata(counts, fmt)
    with caplog.at_level(logging.INFO, logger="acsleuth"):
        source = prepare(adata, name="reference")
    assert source.log_normalize
    assert "reference: X looks like raw counts" in caplog.text
    assert "normalised to 10000 total counts" in caplog.text and "log1p" in caplog.text
    np.testing.assert_allclose(
        source.rows(slice(None)), _scanpy_lognorm(counts), rtol=1e-5, atol=1e-6
    )


def test_user_adata_is_unchanged(make_adata, counts):
    adata = make_adata(counts, "csr")
    before_obs, before_var = adata.obs_names.copy(), adata.var_names.copy()
    with pytest.warns(UserWarning, match="30 of the 31 panel genes"):
        source = prepare(adata, genes=[*adata.var_names[::-1], "extra"])
    rows = source.rows(np.arange(adata.n_obs))
    rows[:] = -1
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert adata.obs_names.equals(before_obs) and adata.var_names.equals(before_var)
    assert not adata.uns and not adata.layers and list(adata.obs.columns) == []


def test_log_normalised_input_is_used_as_is(make_adata, lognorm, caplog):
    with caplog.at_level(logging.INFO, logger="acsleuth"):
        source = prepare(make_adata(lognorm))
    assert not source.log_normalize and "raw counts" not in caplog.text
    np.testing.assert_array_equal(source.rows(slice(None)), lognorm)


def test_small_integers_are_not_raw_counts(make_adata):
    x = np.random.default_rng(0).integers(0, 51, size=(20, 6)).astype(np.float32)
    x[0, 0] = 50
    assert not prepare(make_adata(x)).log_normalize


def test_integer_dtype_counts(counts):
    source = prepare(ad.AnnData(X=counts.astype(np.int32)))
    assert source.log_normalize
    np.testing.assert_allclose(
        source.rows(slice(None)), _scanpy_lognorm(counts), rtol=1e-5, atol=1e-6
    )


def _spoil(x: np.ndarray, value: float, cells: list[int], genes: list[int]) -> np.ndarray:
    x = x.copy()
    x[cells, genes] = value
    return x


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_name_cells_and_genes(make_adata, lognorm, monkeypatch, fmt, value):
    monkeypatch.setattr(matrix, "CHUNK_BYTES", 4 * 25 * 7)  # 7-row chunks: spread over chunks
    adata = make_adata(_spoil(lognorm, value, [2, 2, 40, 59], [0, 3, 3, 24]), fmt)
    with pytest.raises(
        DataError, match=r"^reference: X has NaN or infinite values in 3 cells and 3 genes\."
    ):
        prepare(adata, name="reference")


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_values_name_cells_and_genes(make_adata, lognorm, monkeypatch, fmt):
    monkeypatch.setattr(matrix, "CHUNK_BYTES", 4 * 25 * 7)
    adata = make_adata(_spoil(lognorm, -0.5, [1, 8, 9, 50, 51], [4, 4, 4, 4, 20]), fmt)
    with pytest.raises(
        DataError, match=r"target: X has negative values in 5 cells and 2 genes\. .*scaled"
    ):
        prepare(adata)


def test_nonfinite_and_negative_values_together(lognorm):
    x = _spoil(_spoil(lognorm, np.nan, [0], [0]), -1.0, [1, 2], [1, 1])
    with pytest.raises(
        DataError,
        match=r"NaN or infinite values in 1 cells and 1 genes and "
        r"negative values in 2 cells and 1 genes",
    ):
        prepare(ad.AnnData(X=sp.csr_matrix(x)))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_data(shape):
    with pytest.raises(DataError, match=rf"reference has {shape[0]} cells x {shape[1]} genes"):
        prepare(ad.AnnData(X=np.zeros(shape, np.float32)), name="reference")


def test_missing_matrix():
    with pytest.raises(DataError, match=r"target: X is empty \(None\)"):
        prepare(ad.AnnData(obs={"a": [1, 2]}, var={"b": [1, 2, 3]}))


def test_text_matrix():
    with pytest.raises(DataError, match=r"target: X must be a 2-D numeric matrix"):
        prepare(ad.AnnData(X=np.array([["a", "b"], ["c", "d"]], dtype=object)))


def test_duplicate_names_warn_and_are_made_unique(make_adata, lognorm):
    adata = make_adata(lognorm)
    adata.obs_names = ["c"] * 3 + list(adata.obs_names[3:])
    adata.var_names = ["g", "g", *adata.var_names[2:]]
    with pytest.warns(UserWarning) as record:
        source = prepare(adata, name="reference")
    messages = [str(w.message) for w in record]
    assert any("reference: 2 cell names repeat earlier ones" in m for m in messages)
    assert any("reference: 1 gene names repeat earlier ones" in m for m in messages)
    assert source.obs_names.is_unique and list(source.obs_names[:3]) == ["c", "c-1", "c-2"]
    assert source.genes[:2] == ["g", "g-1"]
    assert list(adata.obs_names[:3]) == ["c"] * 3


def test_layer(counts, lognorm):
    adata = ad.AnnData(X=counts[:60, :25], layers={"lognorm": lognorm})
    source = prepare(adata, layer="lognorm")
    assert not source.log_normalize
    np.testing.assert_array_equal(source.rows(slice(None)), lognorm)


def test_missing_layer(lognorm):
    adata = ad.AnnData(X=lognorm, layers={"counts": lognorm, "raw": lognorm})
    with pytest.raises(
        DataError, match=r"reference: no layer 'lognorm'; available layers: \['counts', 'raw'\]"
    ):
        prepare(adata, name="reference", layer="lognorm")


def test_read_errors_name_the_data_set(tmp_path):
    with pytest.raises(DataError, match=r"^target: .*missing\.h5ad does not exist"):
        prepare(tmp_path / "missing.h5ad")
