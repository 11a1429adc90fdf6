from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from acsleuth import datasets

SMALL = {
    "n_reference": 300,
    "n_target": 400,
    "n_genes": 200,
    "n_types": 3,
    "n_anomaly_types": 2,
    "anomaly_ratio": 0.15,
    "n_batches": 2,
    "seed": 1,
}


@pytest.fixture(scope="module")
def small():
    return datasets.synthetic(**SMALL)


def _log_normalised(x) -> np.ndarray:
    dense = x.toarray() if sp.issparse(x) else np.asarray(x)
    return np.log1p(dense / dense.sum(axis=1, keepdims=True) * 1e4)


def test_synthetic_layout(small):
    reference, target = small
    assert reference.shape == (300, 200) and target.shape == (400, 200)
    for adata in small:
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
        assert np.all(adata.X.data > 0) and np.all(adata.X.data == np.round(adata.X.data))
        assert adata.obs["cell_type"].dtype == "category"
        assert adata.obs["batch"].dtype == "category"
        assert adata.obs["is_anomaly"].dtype == bool
        assert adata.obs_names.is_unique
        assert list(adata.var_names[:2]) == ["gene_0", "gene_1"]
    assert reference.obs_names.intersection(target.obs_names).empty
    assert not reference.obs["is_anomaly"].any()
    assert set(reference.obs["cell_type"].cat.categories) == {"type_0", "type_1", "type_2"}
    assert list(reference.obs["batch"].unique()) == ["reference"]
    assert target.obs["batch"].value_counts().to_dict() == {"target_0": 200, "target_1": 200}
    anomalies = target.obs.loc[target.obs["is_anomaly"], "cell_type"]
    assert len(anomalies) == 60  # exactly round(0.15 * 400)
    assert anomalies.astype(str).value_counts().to_dict() == {"anomaly_0": 30, "anomaly_1": 30}
    assert not target.obs["is_anomaly"].iloc[:60].all()  # anomalies are shuffled in
    params = target.uns["synthetic"]
    assert params["anomaly_ratio"] == 0.15 and params["seed"] == 1
    assert params["log_fold_change"].shape == (5, 200)
    assert params["batch_shift"].shape == (2, 200) and not params["batch_shift"][0].any()


def test_synthetic_library_sizes(small):
    totals = np.asarray(small[0].X.sum(axis=1)).ravel()
    assert 2000 < np.median(totals) < 10000


def test_synthetic_is_deterministic_and_dense_matches_sparse(small):
    again = datasets.synthetic(**SMALL, sparse=False)
    for first, second in zip(small, again, strict=True):
        assert isinstance(second.X, np.ndarray) and second.X.dtype == np.float32
        np.testing.assert_array_equal(first.X.toarray(), second.X)
        pd.testing.assert_frame_equal(first.obs, second.obs)
    other = datasets.synthetic(**{**SMALL, "seed": 2})
    assert (other[1].X != small[1].X).nnz > 0


def test_synthetic_does_not_depend_on_thread_count(monkeypatch):
    # more cells than one random stream covers, so several chunks are sampled
    parallel = datasets.synthetic(10, 5000, 20)[1].X
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    serial = datasets.synthetic(10, 5000, 20)[1].X
    assert (parallel != serial).nnz == 0


def test_synthetic_batch_effect():
    def batch_log_ratio(batch_effect: float) -> float:
        options = {"n_anomaly_types": 0, "anomaly_ratio": 0.0, "n_batches": 2}
        _, target = datasets.synthetic(10, 2000, 300, **options, batch_effect=batch_effect)
        x = _log_normalised(target.X)
        batch = target.obs["batch"].to_numpy()
        means = [x[batch == name].mean(axis=0) for name in ("target_0", "target_1")]
        expressed = (means[0] > 0.5) & (means[1] > 0.5)
        return float(np.mean(np.abs(np.log(means[1][expressed] / means[0][expressed]))))

    assert batch_log_ratio(1.0) > 3 * batch_log_ratio(0.0)


def test_synthetic_types_are_separable(small):
    # nearest-centroid classifier: centroids from even-numbered target cells, tested on the rest
    _, target = small
    x = _log_normalised(target.X)
    types = target.obs["cell_type"].to_numpy()
    names = np.unique(types)
    fit = np.arange(target.n_obs) % 2 == 0
    centroids = np.stack([x[fit & (types == name)].mean(axis=0) for name in names])
    distance = np.linalg.norm(x[~fit, None, :] - centroids[None], axis=2)
    called = names[distance.argmin(axis=1)]
    assert np.mean(called == types[~fit]) > 0.95
    is_anomaly = target.obs["is_anomaly"].to_numpy()[~fit]
    assert np.all(pd.Series(called[is_anomaly]).str.startswith("anomaly_"))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n_reference": 0}, ValueError),
        ({"n_genes": 1}, ValueError),
        ({"n_types": 0}, ValueError),
        ({"n_batches": 0}, ValueError),
        ({"n_target": 2.5}, TypeError),
        ({"anomaly_ratio": 1.0}, ValueError),
        ({"anomaly_ratio": -0.1}, ValueError),
        ({"anomaly_ratio": 0.1, "n_anomaly_types": 0}, ValueError),
        ({"n_target": 1, "anomaly_ratio": 0.9}, ValueError),
        ({"batch_effect": -1.0}, ValueError),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs, error):
    arguments = {"n_reference": 10, "n_target": 10, "n_genes": 20, **kwargs}
    with pytest.raises(error):
        datasets.synthetic(**arguments)


def test_synthetic_without_anomalies():
    reference, target = datasets.synthetic(20, 30, 40, n_anomaly_types=0, anomaly_ratio=0.0)
    assert not target.obs["is_anomaly"].any()
    assert target.obs["cell_type"].cat.categories.equals(reference.obs["cell_type"].cat.categories)


@pytest.fixture(scope="module")
def pbmc():
    return datasets.pbmc_holdout(["CD19+ B", "CD34+"], seed=4)


def test_pbmc_holdout_split(pbmc):
    reference, target = pbmc
    held = {"CD19+ B", "CD34+"}
    assert reference.n_obs + target.n_obs == 700
    assert reference.n_vars == target.n_vars == 765
    assert reference.obs_names.intersection(target.obs_names).empty
    assert not set(reference.obs["cell_type"]) & held
    assert not reference.obs["is_anomaly"].any()
    is_held = target.obs["cell_type"].isin(held).to_numpy()
    np.testing.assert_array_equal(target.obs["is_anomaly"].to_numpy(), is_held)
    assert is_held.sum() == 95 + 13
    assert set(target.obs["cell_type"].cat.categories) == set(datasets.PBMC_CELL_TYPES)
    # stratified: half of every normal type goes to the reference
    counts = reference.obs["cell_type"].value_counts()
    assert counts["Dendritic"] == 120 and counts["CD14+ Monocyte"] == round(0.5 * 129)


def test_pbmc_holdout_copies_are_independent(pbmc):
    reference, target = pbmc
    before = target.X.copy()
    reference.X.data[:] = -1.0
    assert (target.X != before).nnz == 0
    fresh, _ = datasets.pbmc_holdout(["CD19+ B", "CD34+"], seed=4)
    assert fresh.X.min() >= 0.0


def test_pbmc_holdout_is_deterministic():
    first = datasets.pbmc_holdout(seed=5, reference_fraction=0.3)
    second = datasets.pbmc_holdout(seed=5, reference_fraction=0.3)
    third = datasets.pbmc_holdout(seed=6, reference_fraction=0.3)
    assert first[0].obs_names.equals(second[0].obs_names)
    assert first[1].obs_names.equals(second[1].obs_names)
    assert not first[0].obs_names.equals(third[0].obs_names)


def test_pbmc_holdout_batches_scale_the_second_batch_per_gene():
    _, plain = datasets.pbmc_holdout("CD19+ B", seed=3)
    _, target = datasets.pbmc_holdout("CD19+ B", n_batches=2, batch_effect=0.7, seed=3)
    assert target.obs_names.equals(plain.obs_names)  # one batch more changes no split
    assert (plain.obs["batch"] == "target_0").all()
    batch = target.obs["batch"].to_numpy()
    assert abs((batch == "target_0").sum() - (batch == "target_1").sum()) <= 1
    shift = target.uns["pbmc_holdout"]["batch_shift"]
    assert shift.shape == (2, 765) and not shift[0].any()
    assert abs(shift[1].mean()) < 1e-5 and 0.6 < shift[1].std() < 0.8
    x, x0 = target.X.toarray(), plain.X.toarray()
    first = batch == "target_0"
    np.testing.assert_array_equal(x[first], x0[first])
    expected = np.log1p(np.expm1(x0[~first]) * np.exp(shift[1]))
    np.testing.assert_allclose(x[~first], expected, rtol=1e-5, atol=1e-5)
    assert ((x == 0) == (x0 == 0)).all()


@pytest.mark.parametrize("ratio", [0.05, 0.5, 0.9])
def test_pbmc_holdout_anomaly_ratio(ratio):
    _, full = datasets.pbmc_holdout("CD19+ B", seed=0)
    n_anomalous = int(full.obs["is_anomaly"].sum())
    _, target = datasets.pbmc_holdout("CD19+ B", anomaly_ratio=ratio, seed=0)
    is_anomaly = target.obs["is_anomaly"].to_numpy()
    assert is_anomaly.sum() == round(ratio * target.n_obs)
    assert set(target.obs_names) <= set(full.obs_names)
    # only the class in excess shrinks
    if ratio > n_anomalous / full.n_obs:
        assert is_anomaly.sum() == n_anomalous
    else:
        assert (~is_anomaly).sum() == full.n_obs - n_anomalous


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"held_out": "B cells"}, "valid types are"),
        ({"held_out": []}, "no cell type"),
        ({"held_out": list(datasets.PBMC_CELL_TYPES)}, "every cell type"),
        ({"reference_fraction": 1.0}, "reference_fraction"),
        ({"anomaly_ratio": 0.001}, "cannot reach"),
        ({"n_batches": 0}, "n_batches"),
        ({"batch_effect": -1.0}, "batch_effect"),
        ({"held_out": "CD34+", "anomaly_ratio": 0.99}, "cannot reach"),
    ],
)
def test_pbmc_holdout_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.pbmc_holdout(**kwargs)
