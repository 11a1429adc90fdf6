"""The classifier's OOD scores: the "energy+softmax+knn+type" default, "energy+softmax+knn"
and "energy+knn" (docs/method.md §8.1, as implemented), the energy by name, the index's
distances, type distances and standardisation, and their orientation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from classify_toy import FAST, toy

from acsleuth import CellTypeClassifier, metrics
from acsleuth.stages.classify import ClassifierConfig
from acsleuth.stages.classify_ood import (
    TERM_WEIGHTS,
    OODIndex,
    calibrate,
    fit_ood_index,
    term_weights,
)

DOCS = Path(__file__).parents[2] / "docs" / "method.md"


def test_the_default_score_is_the_documented_one() -> None:
    assert ClassifierConfig().ood_score == "energy+softmax+knn+type"
    assert TERM_WEIGHTS["energy+softmax+knn+type"] == (1.0, 1.0, 8.0, 4.0)
    assert ClassifierConfig().type_k == 20
    section = DOCS.read_text().split("### 8.1")[1].split("\n### ")[0]
    assert re.search(r'default.{0,40}"energy\+softmax\+knn\+type"', section, re.S)
    assert 'ood_score="energy"' in section and '"energy+knn"' in section
    assert '"energy+softmax+knn"' in section


def test_the_score_standardises_each_term_on_the_validation_cells() -> None:
    index = OODIndex(
        torch.zeros(2), torch.eye(2), torch.zeros(3, 2), 1, torch.zeros(8), (2.0, 0.5, 3.0, 1.5)
    )
    calibrate(
        index,
        np.array([0.0, 2.0]),
        np.array([0.9, 0.5]),
        np.array([1.0, 5.0]),
        np.array([-1.0, 3.0]),
    )
    # energy: mean 1, sd 1; -confidence: mean -0.7, sd 0.2; distance: mean 3, sd 2;
    # type distance: mean 1, sd 2
    np.testing.assert_allclose(index.moments.numpy(), [1.0, 1.0, -0.7, 0.2, 3.0, 2.0, 1.0, 2.0])
    # 2 (3 - 1) / 1 + 0.5 (-0.3 + 0.7) / 0.2 + 3 (7 - 3) / 2 + 1.5 (5 - 1) / 2 = 4 + 1 + 6 + 3
    score = index.score(np.array([3.0]), np.array([0.3]), np.array([7.0]), np.array([5.0]))
    np.testing.assert_allclose(score, [14.0])
    # a less confident cell, or one farther from its type, is more out of distribution
    assert index.score(np.array([3.0]), np.array([0.2]), np.array([7.0]), np.array([5.0]))[0] > 14
    assert index.score(np.array([3.0]), np.array([0.3]), np.array([7.0]), np.array([6.0]))[0] > 14


def test_the_type_distance_is_in_units_of_the_types_own_leave_one_out_spread() -> None:
    gen = torch.Generator().manual_seed(0)
    tight = torch.randn(12, 3, generator=gen) * 0.1  # type 0: compact
    loose = torch.randn(15, 3, generator=gen) * 2.0 + 5.0  # type 1: diffuse
    few = torch.tensor([[20.0, 0.0, 0.0], [21.0, 0.0, 0.0]])  # type 2: too few for its own
    train = torch.cat([tight, loose, few])
    codes = torch.tensor([0] * 12 + [1] * 15 + [2] * 2)
    index = fit_ood_index(
        train, n_components=50, k=3, weights=(0.0, 0.0, 0.0, 1.0), codes=codes, n_types=4, type_k=4
    )
    keys = index.keys

    def loo(rows: torch.Tensor, k: int) -> torch.Tensor:  # slow: all pairs, self excluded
        d = torch.cdist(keys[rows], keys[rows]).fill_diagonal_(float("inf"))
        return d.sort(1).values[:, :k].mean(1)

    own = [loo(codes == c, 4) for c in (0, 1)]
    for c in (0, 1):
        expected = [own[c].mean(), own[c].std(correction=0)]
        np.testing.assert_allclose(index.type_moments[c].numpy(), expected, rtol=1e-4)
    pooled = torch.cat([*own, loo(codes == 2, 1)])  # a 2-cell type averages its 1 other cell
    for c in (2, 3):  # too few indexed cells, or none: all types' moments
        expected = [pooled.mean(), pooled.std(correction=0)]
        np.testing.assert_allclose(index.type_moments[c].numpy(), expected, rtol=1e-4)
    query = torch.tensor([[0.0, 0.0, 1.0], [5.0, 5.0, 6.0], [20.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    types = torch.tensor([0, 1, 2, 3])
    found = index.type_distances(query, types)
    y = index.project(query)
    for row, (c, k) in enumerate([(0, 4), (1, 4), (2, 1)]):
        d = torch.cdist(y[row : row + 1], keys[codes == c]).sort(1).values[0, :k].mean()
        mean, std = index.type_moments[c]
        np.testing.assert_allclose(found[row].item(), ((d - mean) / std).item(), rtol=1e-4)
    assert found[3] == 0.0  # no indexed cell of type 3: no evidence either way
    # the same distance from each type's centre is far from the compact type and near the
    # diffuse one (centred at (5, 5, 5))
    same = torch.tensor([[0.0, 0.0, 1.5], [5.0, 5.0, 6.5]])
    near = index.type_distances(same, torch.tensor([0, 1]))
    assert near[0] > 5.0 and near[1] < 1.0


def test_the_weights_of_each_score_and_an_index_saved_before_the_softmax_term() -> None:
    assert term_weights("energy+knn", None) == (1.0, 0.0, 2.0, 0.0)
    assert term_weights("energy+softmax+knn", 3.0) == (1.0, 1.0, 3.0, 0.0)
    assert term_weights("energy+softmax+knn+type", None) == (1.0, 1.0, 8.0, 4.0)
    old = {  # the two-term "energy+knn" index as saved before
        "mean": torch.zeros(2),
        "components": torch.eye(2),
        "keys": torch.zeros(3, 2),
        "k": torch.tensor(1),
        "moments": torch.tensor([1.0, 1.0, 3.0, 2.0], dtype=torch.float64),
        "weight": torch.tensor(2.0, dtype=torch.float64),
    }
    index = OODIndex.from_state_dict(old)
    assert index.weights == (1.0, 0.0, 2.0, 0.0) and index.codes is None
    # the old score: (3 - 1) / 1 + 2 (7 - 3) / 2 = 6, whatever the confidence
    for confidence in (0.1, 0.9):
        np.testing.assert_allclose(
            index.score(np.array([3.0]), np.array([confidence]), np.array([7.0])), [6.0]
        )
    again = OODIndex.from_state_dict(index.state_dict())
    assert again.weights == index.weights and torch.equal(again.moments, index.moments)
    three = {
        **index.state_dict(),
        "moments": index.moments[:6],
        "weights": torch.tensor([1.0, 1.0, 8.0]),
    }
    before_type = OODIndex.from_state_dict(three)  # "energy+softmax+knn" as saved before
    assert before_type.weights == (1.0, 1.0, 8.0, 0.0) and before_type.moments.numel() == 8
    with pytest.raises(ValueError, match="saved before the type distance; refit"):
        before_type.type_distances(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_the_index_measures_mean_distances_to_the_nearest_training_cells() -> None:
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(40, 5, generator=gen)
    query = torch.randn(7, 5, generator=gen) * 3
    index = fit_ood_index(train, n_components=50, k=3, weights=(0.0, 0.0, 1.0, 0.0))  # exact
    assert index.components.shape == (5, 5)
    slow = torch.cdist(query, train).sort(1).values[:, :3].mean(1)
    np.testing.assert_allclose(index.distances(query).numpy(), slow.numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match="too few for knn_k=40"):
        fit_ood_index(train, n_components=5, k=40, weights=(0.0, 0.0, 1.0, 0.0))


@pytest.fixture(scope="module")
def data():
    return toy(seed=0), toy(n_per_type=30, types=(0, 1, 2, 3), seed=1)


@pytest.mark.parametrize(
    "score", ["energy+softmax+knn+type", "energy+softmax+knn", "energy+knn", "energy"]
)
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
    with pytest.raises(
        ValueError,
        match=r"ood_score must be one of \('energy', 'energy\+knn', 'energy\+softmax\+knn', "
        r"'energy\+softmax\+knn\+type'\)",
    ):
        CellTypeClassifier(ood_score="knn")
    with pytest.raises(ValueError, match="knn_k must be a positive integer"):
        CellTypeClassifier(knn_k=0)
    with pytest.raises(ValueError, match="type_k must be a positive integer"):
        CellTypeClassifier(type_k=0)
