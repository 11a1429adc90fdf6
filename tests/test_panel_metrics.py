"""Gene-panel metrics of ACE's evaluation (docs/method.md §8.3) on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from acsleuth import metrics


def test_redundancy_is_the_mean_absolute_pairwise_correlation() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    x = np.stack([a, -a, np.array([1.0, -1.0, -1.0, 1.0]), np.ones(4)], axis=1)
    # pairs (0,1): 1, (0,2): 0, (1,2): 0 -> 1/3; a constant gene counts 0
    assert metrics.panel_redundancy(x, [0, 1, 2]) == pytest.approx(1 / 3)
    assert metrics.panel_redundancy(x, [0, 3]) == 0.0
    with pytest.raises(ValueError, match="at least 2 genes"):
        metrics.panel_redundancy(x, [0])
    with pytest.raises(ValueError, match=r"gene indices in 0\.\.3"):
        metrics.panel_redundancy(x, [0, 7])


def test_knn_jaccard_is_zero_for_the_full_panel_and_high_for_noise() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 30)
    x = np.hstack(
        [
            np.where(labels == "a", 0.0, 5.0)[:, None] + rng.normal(0, 1, (60, 2)),
            rng.normal(0, 0.01, (60, 3)),
        ]
    )
    everything = {"a": range(5), "b": range(5)}
    assert metrics.knn_jaccard_distance(x, labels, everything, k=5) == 0.0
    signal = metrics.knn_jaccard_distance(x, labels, {"a": [0, 1], "b": [0, 1]}, k=5)
    noise = metrics.knn_jaccard_distance(x, labels, {"a": [3, 4], "b": [3, 4]}, k=5)
    assert signal < 0.05 < 0.5 < noise <= 1.0
    with pytest.raises(ValueError, match="no gene panel for the groups \\['b'\\]"):
        metrics.knn_jaccard_distance(x, labels, {"a": [0]}, k=5)


def test_panel_auroc_separates_signal_from_noise() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b", "c"], 20)
    x = rng.normal(0, 1, (60, 4))
    x[labels == "a", 0] += 4.0
    assert metrics.panel_auroc(x, labels, "a", [0]) > 0.95
    assert metrics.panel_auroc(x, labels, "a", [2, 3]) < 0.8
    with pytest.raises(ValueError, match="at least 3 cells"):
        metrics.panel_auroc(x[:22], labels[:22], "b", [0])
