"""Per-batch centring of residuals before scoring (``ACsleuth.evaluate(batch_key=...)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.stages.detect import center_by_batch


def test_center_by_batch_removes_each_batch_median() -> None:
    gen = torch.Generator().manual_seed(0)
    residuals = torch.randn(9, 4, generator=gen).half()
    codes = np.array([1, 0, 1, 1, 0, 2, 0, 1, 1])
    centered = center_by_batch(residuals, codes)
    assert centered.dtype == residuals.dtype and centered.shape == residuals.shape
    for batch in range(3):
        rows = codes == batch
        part = residuals[rows].float()
        expected = part - part.median(dim=0).values
        torch.testing.assert_close(centered[rows].float(), expected, atol=2e-3, rtol=0)
    assert not torch.equal(centered, residuals)  # a new tensor; the input is left alone
    torch.testing.assert_close(center_by_batch(residuals, np.zeros(9, dtype=int)).float(),
                               (residuals.float() - residuals.float().median(0).values),
                               atol=2e-3, rtol=0)


@pytest.fixture(scope="module")
def shifted():
    reference, target = datasets.pbmc_holdout("CD19+ B", n_batches=2, batch_effect=1.0, seed=0)
    model = ACsleuth(prepare_epochs=10, train_epochs=3, score_epochs=2, batch_size=64,
                     device="cpu", verbose=False, random_state=0).fit(reference)
    return model, target


def test_batch_key_narrows_the_score_gap_of_a_shifted_batch(shifted) -> None:
    model, target = shifted
    normal = ~target.obs["is_anomaly"].to_numpy()
    second = (target.obs["batch"] == "target_1").to_numpy()

    def batch_gap(scores: np.ndarray) -> float:
        return float(np.median(scores[normal & second]) - np.median(scores[normal & ~second]))

    plain, centred = model.evaluate(target), model.evaluate(target, batch_key="batch")
    assert batch_gap(plain.scores["scaled"]) > 1.0  # the shifted batch's normal cells score higher
    assert batch_gap(centred.scores["scaled"]) < 0.9 * batch_gap(plain.scores["scaled"])
    truth = target.obs["is_anomaly"].to_numpy()
    assert metrics.auroc(truth, centred.score) > 0.9
    np.testing.assert_array_equal(centred.scores["residual"], plain.scores["residual"])


def test_an_unknown_batch_key_is_a_clear_error(shifted) -> None:
    model, target = shifted
    with pytest.raises(KeyError, match="not an obs column"):
        model.evaluate(target, batch_key="donor")
