"""The classifier's OOD scores: the "energy+knn" default (docs/method.md §8.1, as implemented),
the energy by name, the index's distances and standardisation, and their orientation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from classify_toy import FAST, toy

from acsleuth import CellTypeClassifier, metrics
from acsleuth.stages.classify import ClassifierConfig
from acsleuth.stages.classify_ood import OODIndex, calibrate, fit_ood_index

DOCS = Path(__file__).parents[2] / "docs" / "method.md"


def test_the_default_score_is_the_documented_one() -> None:
    assert ClassifierConfig().ood_score == "energy+knn"
    section = DOCS.read_text().split("### 8.1")[1].split("\n### ")[0]
    assert re.search(r'default.{0,40}"energy\+knn"', section, re.S)
    assert 'ood_score="energy"' in section


def test_the_score_standardises_each_term_on_the_validation_cells() -> None:
    index = OODIndex(torch.zeros(2), torch.eye(2), torch.zeros(3, 2), 1, torch.zeros(4), weight=2.0)
    calibrate(index, np.array([0.0, 2.0]), np.array([1.0, 5.0]))  # means 1, 3; sds 1, 2
    np.testing.assert_allclose(index.moments.numpy(), [1.0, 1.0, 3.0, 2.0])
    # (3 - 1) / 1 + 2 * (7 - 3) / 2 = 6 by hand
    np.testing.assert_allclose(index.score(np.array([3.0]), np.array([7.0])), [6.0])


def test_the_index_measures_mean_distances_to_the_nearest_training_cells() -> None:
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(40, 5, generator=gen)
    query = torch.randn(7, 5, generator=gen) * 3
    index = fit_ood_index(train, n_components=50, k=3, weight=1.0)  # all 5 axes: exact
    assert index.components.shape == (5, 5)
    slow = torch.cdist(query, train).sort(1).values[:, :3].mean(1)
    np.testing.assert_allclose(index.distances(query).numpy(), slow.numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match="too few for knn_k=40"):
        fit_ood_index(train, n_components=5, k=40, weight=1.0)


@pytest.fixture(scope="module")
def data():
    return toy(seed=0), toy(n_per_type=30, types=(0, 1, 2, 3), seed=1)


@pytest.mark.parametrize("score", ["energy+knn", "energy"])
def test_a_far_away_cluster_scores_higher_under_either_score(data, score) -> None:
    reference, target = data
    model = CellTypeClassifier(random_state=0, ood_score=score, **FAST)
    result = model.fit(reference, label_key="cell_type").classify(target)
    unknown = (target.obs["cell_type"] == "type 3").to_numpy()
    assert metrics.auroc(unknown, result.ood_score) > 0.95  # higher = more OOD
    assert metrics.auroc(unknown, result.energy) > 0.95
    if score == "energy":
        assert model.index_ is None
        np.testing.assert_array_equal(result.ood_score, result.energy)
    else:
        assert not np.allclose(result.ood_score, result.energy)
        assert np.array_equal(result.ood, result.ood_score > model.threshold_)


def test_bad_score_settings_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"ood_score must be one of \('energy', 'energy\+knn'\)"):
        CellTypeClassifier(ood_score="knn")
    with pytest.raises(ValueError, match="knn_k must be a positive integer"):
        CellTypeClassifier(knn_k=0)
