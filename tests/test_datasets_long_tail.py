"""``datasets.synthetic(proportions="long_tail")``: a geometric profile of type sizes."""

from __future__ import annotations

import numpy as np
import pytest

from acsleuth import datasets


def test_long_tail_shares_span_the_imbalance_and_anomalies_split_exactly() -> None:
    ref, tgt = datasets.synthetic(
        4000,
        1000,
        50,
        n_types=4,
        n_anomaly_types=3,
        anomaly_ratio=0.3,
        proportions="long_tail",
        imbalance=27.0,
        seed=0,
    )
    counts = ref.obs["cell_type"].value_counts()
    expected = 27.0 ** (-np.arange(4) / 3)
    expected = 4000 * expected / expected.sum()  # 2769, 923, 308, 103 (random draws)
    for i, want in enumerate(expected):
        assert abs(counts[f"type_{i}"] - want) < 5 * np.sqrt(want) + 5
    anomalies = tgt.obs.loc[tgt.obs["is_anomaly"], "cell_type"].value_counts()
    # 300 cells in shares 1 : 1/sqrt(27) : 1/27 -> 244.0, 46.96, 9.04 -> largest remainders
    assert [anomalies[f"anomaly_{i}"] for i in range(3)] == [244, 47, 9]
    assert ref.uns["synthetic"]["proportions"] == "long_tail"


def test_default_proportions_are_unchanged_by_the_new_option() -> None:
    a, _ = datasets.synthetic(200, 100, 20, seed=3)
    b, _ = datasets.synthetic(200, 100, 20, seed=3, proportions="dirichlet")
    assert (a.obs["cell_type"] == b.obs["cell_type"]).all()


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"proportions": "zipf"}, "proportions must be"),
        ({"proportions": "long_tail", "imbalance": 0.5}, "imbalance must be"),
    ],
)
def test_bad_proportions_are_refused_in_one_line(kw, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        datasets.synthetic(50, 50, 10, **kw)
