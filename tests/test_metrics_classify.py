"""ECE and the OOD AUROC helper on hand-computed cases."""

from __future__ import annotations

import pytest

from acsleuth import metrics


def test_ece_weights_each_bin_by_its_count_over_n() -> None:
    # bin (0.8, 0.9]: 2 cells, accuracy 0.5, confidence 0.9 -> 2 * 0.4
    # bin (0.5, 0.6]: 2 cells, accuracy 1.0, confidence 0.6 -> 2 * 0.4; total 1.6 / N=4
    assert metrics.ece([1, 0, 1, 1], [0.9, 0.9, 0.6, 0.6], n_bins=10) == pytest.approx(0.4)
    # the seed's eq. 6 divides by the number of bins instead: 1.6 / 10 = 0.16 -- not this
    assert metrics.ece([1, 0, 1, 1], [0.9, 0.9, 0.6, 0.6], n_bins=10) != pytest.approx(0.16)


def test_ece_of_a_calibrated_and_of_a_confidently_wrong_classifier() -> None:
    assert metrics.ece([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5], n_bins=4) == pytest.approx(0.0)
    assert metrics.ece([0, 0, 0], [1.0, 1.0, 1.0]) == pytest.approx(1.0)


def test_ece_bins_are_closed_on_the_right_and_zero_joins_the_first() -> None:
    # n_bins=2: 0.5 falls in (0, 0.5] with 0.0; 0.75 alone in (0.5, 1]
    # bin 1: acc 1/2, conf 0.25 -> |0.25| * 2; bin 2: acc 1, conf 0.75 -> 0.25 * 1; / 3
    assert metrics.ece([1, 0, 1], [0.5, 0.0, 0.75], n_bins=2) == pytest.approx((0.5 + 0.25) / 3)


def test_ece_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"confidence must lie in \[0, 1\]"):
        metrics.ece([1], [1.5])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.ece([1, 0], [0.5])
    with pytest.raises(ValueError, match="n_bins"):
        metrics.ece([1], [0.5], n_bins=0)


def test_ood_auroc_counts_ordered_pairs() -> None:
    # out scores {2, 0.5} vs in {1, 0}: pairs won 2>1, 2>0, 0.5>0, lost 0.5<1 -> 3/4
    assert metrics.ood_auroc([1.0, 0.0], [2.0, 0.5]) == pytest.approx(0.75)
    assert metrics.ood_auroc([0.0, 0.1], [5.0, 6.0]) == 1.0
