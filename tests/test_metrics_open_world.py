"""Open-world accuracy (scDET, docs/method.md §8.2) on hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from acsleuth import metrics


def test_cluster_accuracy_uses_the_best_one_to_one_map() -> None:
    assert metrics.cluster_accuracy([0, 0, 1, 1, 2], [5, 5, 3, 3, 3]) == pytest.approx(0.8)
    # two clusters cannot both map to label "a": one of them counts as wrong
    assert metrics.cluster_accuracy(["a", "a", "a", "a"], ["x", "x", "x", "y"]) == pytest.approx(
        0.75
    )


def test_open_world_accuracy_by_hand_overall_below_both() -> None:
    truth = ["a", "a", "b", "b", "n", "n", "m", "m"]
    pred = ["a", "a", "b", "b", "a", "a", "b", "b"]  # novel types folded into seen names
    acc = metrics.open_world_accuracy(truth, pred, seen=["a", "b"])
    assert acc["seen"] == pytest.approx(1.0)
    assert acc["novel"] == pytest.approx(1.0)  # n -> "a", m -> "b" among novel cells alone
    assert acc["overall"] == pytest.approx(0.5)  # jointly, "a" and "b" each cover one type


def test_open_world_accuracy_seen_is_exact_and_novel_nan_without_novel_cells() -> None:
    acc = metrics.open_world_accuracy(["a", "b", "b"], ["a", "a", "b"], seen=["a", "b"])
    assert acc["seen"] == pytest.approx(2 / 3) and np.isnan(acc["novel"])


def test_open_world_accuracy_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.open_world_accuracy(["a", "b"], ["a"], seen=["a"])
