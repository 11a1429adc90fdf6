"""ACsleuth.run's subtypes on a planted toy: three well-separated anomaly groups, two batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from acsleuth import ACsleuth, metrics

FAST = {
    "prepare_epochs": 3,
    "train_epochs": 1,
    "score_epochs": 2,
    "batch_size": 32,
    "n_memory": 50,
    "kin_epochs": 1,
    "style_epochs": 2,
    "subtype_epochs": 5,
    "score": "scaled",
    "anomaly_ratio": 0.3,
    "device": "cpu",
    "verbose": False,
}
N_GENES, BLOCK = 120, 15


def _cells(rng: np.random.Generator, groups: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """log1p Poisson counts: every group raises its own block of genes ~20-fold."""
    log_mean = np.full((len(groups), N_GENES), 0.5) + shift
    for g in np.unique(groups):
        log_mean[groups == g, g * BLOCK : (g + 1) * BLOCK] += 3.0
    return np.log1p(rng.poisson(np.exp(log_mean))).astype(np.float32)


def _planted(seed: int = 0) -> tuple[AnnData, AnnData]:
    """Reference: normal groups 0-1; target: 140 normal + 60 anomalous cells (groups 2-4),
    half of them in a second batch with a per-gene log-shift of sd 1."""
    rng = np.random.default_rng(seed)
    reference = _cells(rng, rng.integers(0, 2, 300), np.zeros(N_GENES))
    groups = np.concatenate([rng.integers(0, 2, 140), np.repeat([2, 3, 4], 20)])
    batch = rng.permutation(np.arange(len(groups)) % 2)
    shift = rng.normal(0.0, 1.0, N_GENES)
    target = _cells(rng, groups, np.where(batch[:, None] == 1, shift, 0.0))
    genes = pd.Index([f"g{i}" for i in range(N_GENES)])
    obs = pd.DataFrame(
        {
            "group": pd.Categorical(groups.astype(str)),
            "is_anomaly": groups >= 2,
            "batch": pd.Categorical(batch.astype(str)),
        }
    )
    obs.index = obs.index.astype(str)
    return AnnData(reference, var=pd.DataFrame(index=genes)), AnnData(
        target, obs=obs, var=pd.DataFrame(index=genes)
    )


@pytest.fixture(scope="module")
def planted():
    reference, target = _planted()
    return reference, target, ACsleuth(**FAST, random_state=0).fit(reference)


def _subtype_nmi(target: AnnData, annotated: AnnData) -> float:
    called = annotated.obs["acsleuth_anomaly"].to_numpy(bool)
    subtype = annotated.obs["acsleuth_subtype"].astype(object).to_numpy()
    return metrics.subtype_scores(target.obs["is_anomaly"], called, target.obs["group"], subtype)[
        "nmi"
    ]


@pytest.mark.parametrize("n_subtypes", [3, "auto"])
def test_run_separates_three_planted_groups_across_two_batches(planted, n_subtypes) -> None:
    reference, target, model = planted
    annotated = model.run(reference, target.copy(), batch_key="batch", n_subtypes=n_subtypes)
    called = annotated.obs["acsleuth_anomaly"].to_numpy(bool)
    assert metrics.f1(target.obs["is_anomaly"], called) > 0.9  # the calls are not what is tested
    assert annotated.uns["acsleuth"]["n_subtypes"] == 3
    assert _subtype_nmi(target, annotated) >= 0.9
    labels = annotated.obs["acsleuth_subtype"].astype(str).to_numpy()[called]
    assert metrics.nmi(target.obs["batch"].to_numpy()[called], labels) < 0.1  # not split by batch
