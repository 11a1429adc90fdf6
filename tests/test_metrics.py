from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from acsleuth import metrics

TRUTH = np.array([True, False, True, False, False])
SCORES = np.array([0.9, 0.8, 0.3, 0.5, 0.1])


def test_hand_computed_example():
    # positives 0.9 and 0.3 beat 3 and 1 of the 3 negatives -> AUROC 4/6
    assert metrics.auroc(TRUTH, SCORES) == pytest.approx(2 / 3)
    # ranking P N N P: precision 1 at the first positive, 2/4 at the second
    assert metrics.average_precision(TRUTH, SCORES) == pytest.approx(0.75)
    # top 2 = cells 0 and 1: TP 1, FP 1, FN 1
    assert metrics.f1_at_ratio(TRUTH, SCORES) == pytest.approx(0.5)


def test_perfect_and_inverted_scores():
    truth = [0, 0, 1, 1]
    scores = [0.1, 0.2, 0.8, 0.9]
    assert metrics.detection_report(truth, scores) == {"auroc": 1.0, "ap": 1.0, "f1_at_ratio": 1.0}
    inverted = [-s for s in scores]
    assert metrics.auroc(truth, inverted) == 0.0
    assert metrics.average_precision(truth, inverted) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert metrics.f1_at_ratio(truth, inverted) == 0.0


def test_random_scores_are_near_chance():
    rng = np.random.default_rng(0)
    truth = rng.random(4000) < 0.2
    scores = rng.random(4000)
    assert metrics.auroc(truth, scores) == pytest.approx(0.5, abs=0.04)
    assert metrics.average_precision(truth, scores) == pytest.approx(truth.mean(), abs=0.04)


def test_f1_at_ratio_breaks_ties_by_position():
    scores = [1.0, 1.0, 1.0, 0.0]
    assert metrics.f1_at_ratio([1, 1, 0, 0], scores) == 1.0  # cells 0 and 1 are called
    assert metrics.f1_at_ratio([0, 1, 1, 0], scores) == 0.5


def test_f1_of_calls():
    assert metrics.f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert metrics.f1(pd.Series([True, False]), np.array([True, False])) == 1.0
    assert metrics.f1([0, 0], [0, 0]) == 0.0


def test_detection_report_with_calls():
    report = metrics.detection_report(TRUTH, SCORES, predicted=SCORES > 0.4)
    assert set(report) == {"auroc", "ap", "f1_at_ratio", "f1"}
    assert report["f1"] == pytest.approx(0.4)  # calls 0, 1, 3: TP 1, FP 2, FN 1


def test_nmi_and_ari_accept_any_labels():
    assert metrics.nmi(["a", "a", "b", "b"], [7, 7, 3, 3]) == pytest.approx(1.0)
    assert metrics.ari(pd.Categorical(["x", "x", "y"]), ("p", "p", "q")) == pytest.approx(1.0)
    assert metrics.nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # all pairs split: sum C(n_ij, 2) = 0, expected index 2 * 2 / 6, maximum 2
    assert metrics.ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_subtype_scores_use_true_and_predicted_anomalies_only():
    is_anomaly = [1, 1, 1, 1, 0, 0]
    predicted = [1, 1, 1, 0, 1, 0]
    true_type = ["A", "A", "B", "B", "normal", "normal"]
    # cell 3 (missed) has no subtype; cell 4 (false call) would spoil the subtypes if counted
    subtype = pd.Series(pd.Categorical(["s1", "s1", "s2", None, "s2", None]))
    scores = metrics.subtype_scores(is_anomaly, predicted, true_type, subtype)
    # F1: TP 3, FP 1, FN 1 -> 6 / 8
    assert scores == pytest.approx({"nmi": 1.0, "ari": 1.0, "f1": 0.75, "f1_nmi": 0.75})


def test_subtype_scores_without_evaluated_cells():
    scores = metrics.subtype_scores([1, 0], [0, 1], ["A", "n"], [None, "s"])
    assert np.isnan(scores["nmi"]) and np.isnan(scores["ari"])
    assert scores["f1"] == 0.0 and scores["f1_nmi"] == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.auroc([1, 1, 1], [0.1, 0.2, 0.3]), "every cell anomalous"),
        (lambda: metrics.average_precision([0, 0], [0.1, 0.2]), "every cell normal"),
        (lambda: metrics.f1_at_ratio([0, 1], [0.1, np.nan]), "1 non-finite"),
        (lambda: metrics.auroc([0, 1, 1], [0.1, 0.2]), "differ in length"),
        (lambda: metrics.auroc([0, 2], [0.1, 0.2]), "boolean or 0/1"),
        (lambda: metrics.auroc([[0, 1]], [[0.1, 0.2]]), "one-dimensional"),
        (lambda: metrics.f1([], []), "empty"),
        (lambda: metrics.nmi(["a", None], ["x", "y"]), "1 missing"),
        (lambda: metrics.ari([0, 1], [0, 1, 2]), "differ in length"),
        (lambda: metrics.subtype_scores([1, 1], [1, 1], ["A", "B"], ["s", np.nan]), "missing"),
    ],
)
def test_invalid_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
