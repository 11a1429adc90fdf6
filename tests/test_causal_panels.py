"""datasets.causal_panels: ACE's simulation (docs/method.md §8.3)."""

from __future__ import annotations

import numpy as np
import pytest

from acsleuth import datasets


def test_roles_groups_and_signal() -> None:
    adata = datasets.causal_panels(200, 4, n_causal=8, n_dependent=12, n_noise=10, seed=3)
    assert adata.shape == (200, 30) and adata.X.dtype == np.float32
    assert list(adata.var["role"].value_counts()[["causal", "dependent", "noise"]]) == [8, 12, 10]
    assert adata.obs["group"].nunique() == 4 and (adata.X >= 0).all()
    groups = adata.obs["group"].to_numpy()

    def spread(role: str) -> float:  # largest between-group gap of group means, per gene, averaged
        x = adata.X[:, (adata.var["role"] == role).to_numpy()]
        means = np.stack([x[groups == g].mean(0) for g in np.unique(groups)])
        return float((means.max(0) - means.min(0)).mean())

    assert spread("causal") > 1.0 > 0.3 > spread("noise")


def test_complex_keeps_the_genes_and_adds_batches_and_zeros() -> None:
    clean = datasets.causal_panels(150, 3, seed=5)
    messy = datasets.causal_panels(150, 3, complex=True, seed=5)
    assert list(clean.var["role"]) == list(messy.var["role"])
    assert (clean.obs["group"] == messy.obs["group"]).all()
    assert clean.obs["batch"].nunique() == 1 and messy.obs["batch"].nunique() == 2
    assert (messy.X == 0).mean() > (clean.X == 0).mean() + 0.05
    with pytest.raises(ValueError, match="n_groups must be >= 2"):
        datasets.causal_panels(10, 1)
