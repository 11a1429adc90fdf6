"""Small synthetic expression data in every storage the data layer reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import names


@pytest.fixture
def counts() -> np.ndarray:
    """Raw counts (70 cells x 30 genes, float32 integers, max > 50), one cell with no counts."""
    rng = np.random.default_rng(0)
    x = rng.poisson(rng.gamma(0.6, 4.0, size=(70, 30))).astype(np.float32)
    x[3, 7] = 120
    x[5] = 0
    return x


@pytest.fixture
def lognorm() -> np.ndarray:
    """Log-normalised-looking values (60 cells x 25 genes): non-negative, not integers."""
    rng = np.random.default_rng(1)
    x = np.log1p(rng.gamma(0.5, 3.0, size=(60, 25))).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    return x


@pytest.fixture
def make_adata(tmp_path) -> Iterator[Callable[..., ad.AnnData]]:
    """``make_adata(x, fmt)``: an AnnData with ``x`` stored as ``fmt`` (one of FORMATS)."""
    opened: list[ad.AnnData] = []

    def make(x: np.ndarray, fmt: str = "dense", **kwargs) -> ad.AnnData:
        storage = fmt.removeprefix("backed-")
        matrix = {"dense": np.array, "csr": sp.csr_matrix, "csc": sp.csc_matrix}[storage](x)
        adata = ad.AnnData(
            X=matrix,
            obs=pd.DataFrame(index=names("cell", x.shape[0])),
            var=pd.DataFrame(index=names("gene", x.shape[1])),
            **kwargs,
        )
        if not fmt.startswith("backed-"):
            return adata
        path = tmp_path / f"{fmt}-{len(opened)}.h5ad"
        adata.write_h5ad(path)
        opened.append(ad.read_h5ad(path, backed="r"))
        return opened[-1]

    yield make
    for adata in opened:
        adata.file.close()
