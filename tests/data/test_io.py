"""read(): AnnData, .h5ad (in memory and backed), 10x folders, CSV/TSV tables, bad paths."""

from __future__ import annotations

import gzip
import shutil

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from _helpers import names

from acsleuth.data import DataError, read


def test_anndata_passes_through_unchanged(lognorm):
    adata = ad.AnnData(X=lognorm)
    assert read(adata) is adata


@pytest.mark.parametrize("backed", [False, True])
def test_h5ad(tmp_path, lognorm, backed):
    path = tmp_path / "x.h5ad"
    ad.AnnData(
        X=lognorm, obs=pd.DataFrame(index=names("c", 60)), var=pd.DataFrame(index=names("g", 25))
    ).write_h5ad(path)
    adata = read(str(path), backed=backed)
    try:
        assert adata.isbacked == backed
        assert isinstance(adata.X, h5py.Dataset) == backed
        np.testing.assert_array_equal(adata.X[:], lognorm)
        assert list(adata.obs_names) == names("c", 60)
        assert list(adata.var_names) == names("g", 25)
    finally:
        if backed:
            adata.file.close()


def _write(path, text: str, compress: bool) -> None:
    if compress:
        with gzip.open(f"{path}.gz", "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def _tenx_folder(folder, counts, *, v3: bool, feature_types=None):
    """Write ``counts`` (cells x genes) as a 10x folder: gzipped v3 layout or plain legacy one."""
    folder.mkdir()
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(counts.T.astype(np.int64)))
    if v3:
        with (
            open(folder / "matrix.mtx", "rb") as src,
            gzip.open(folder / "matrix.mtx.gz", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        (folder / "matrix.mtx").unlink()
    n_cells, n_genes = counts.shape
    types = feature_types or ["Gene Expression"] * n_genes
    rows = [f"ENSG{i:05d}\tSYM{i}" + (f"\t{types[i]}" if v3 else "") for i in range(n_genes)]
    _write(folder / ("features.tsv" if v3 else "genes.tsv"), "\n".join(rows) + "\n", v3)
    _write(folder / "barcodes.tsv", "\n".join(f"BC{i}-1" for i in range(n_cells)) + "\n", v3)


@pytest.mark.parametrize("v3", [True, False])
def test_10x_folder(tmp_path, counts, v3):
    _tenx_folder(tmp_path / "tenx", counts, v3=v3)
    adata = read(tmp_path / "tenx")
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == [f"SYM{i}" for i in range(30)]
    assert list(adata.var["gene_ids"]) == [f"ENSG{i:05d}" for i in range(30)]
    assert list(adata.obs_names) == [f"BC{i}-1" for i in range(70)]


def test_10x_keeps_gene_expression_features(tmp_path, counts):
    types = ["Gene Expression"] * 27 + ["Antibody Capture"] * 3
    _tenx_folder(tmp_path / "tenx", counts, v3=True, feature_types=types)
    adata = read(tmp_path / "tenx")
    assert adata.n_vars == 27
    np.testing.assert_array_equal(adata.X.toarray(), counts[:, :27])


def test_10x_folder_missing_file(tmp_path, counts):
    _tenx_folder(tmp_path / "tenx", counts, v3=True)
    (tmp_path / "tenx" / "barcodes.tsv.gz").unlink()
    with pytest.raises(DataError, match=r"tenx is not a complete 10x folder: no barcodes file"):
        read(tmp_path / "tenx")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv"])
def test_table(tmp_path, lognorm, suffix):
    path = tmp_path / f"x{suffix}"
    table = pd.DataFrame(lognorm, index=names("c", 60), columns=names("g", 25))
    table.to_csv(path, sep="\t" if suffix == ".tsv" else ",")
    adata = read(path)
    np.testing.assert_allclose(adata.X, lognorm, rtol=1e-6)
    assert list(adata.obs_names) == names("c", 60)
    assert list(adata.var_names) == names("g", 25)


def test_table_with_text_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("cell,g1,g2\nc1,1,a\nc2,2,b\n")
    with pytest.raises(DataError, match=r"1 column\(s\) are not numeric \(e.g. \['g2'\]\)"):
        read(path)


def test_missing_path(tmp_path):
    with pytest.raises(
        DataError, match=r"nope\.h5ad does not exist; pass an AnnData object, a \.h5ad"
    ):
        read(tmp_path / "nope.h5ad")


def test_unknown_format(tmp_path):
    (tmp_path / "x.loom").write_text("")
    with pytest.raises(DataError, match=r"x\.loom is in an unknown format; pass .*10x folder"):
        read(tmp_path / "x.loom")


def test_corrupt_h5ad(tmp_path):
    (tmp_path / "x.h5ad").write_text("not hdf5")
    with pytest.raises(DataError, match=r"could not be read as \.h5ad"):
        read(tmp_path / "x.h5ad")


def test_not_a_path():
    with pytest.raises(DataError, match=r"cannot read a ndarray"):
        read(np.zeros((2, 2)))
