"""Per-batch centring of residuals before scoring (``ACsleuth.evaluate(batch_key=...)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.data.store import RowStore
from acsleuth.stages.residuals import ScaledResiduals, batch_medians, median_sample


def test_centred_residuals_subtract_each_batch_median() -> None:
    gen = torch.Generator().manual_seed(0)
    residuals = torch.randn(9, 4, generator=gen).half()
    codes = torch.tensor([1, 0, 1, 1, 0, 3, 0, 1, 1])
    centre = batch_medians(residuals, codes, 4)
    assert centre.shape == (4, 4) and centre.dtype == torch.float32
    assert torch.equal(centre[2], torch.zeros(4))  # a batch without rows
    centred = ScaledResiduals(RowStore.of(residuals), centre, codes)
    rows = torch.cat([part for _, part in centred.chunks(4)])
    for batch in (0, 1, 3):
        mine = codes == batch
        part = residuals[mine].float()
        torch.testing.assert_close(rows[mine], part - part.median(dim=0).values)
    torch.testing.assert_close(centred.norms(size=2), rows.norm(dim=1))
    assert residuals.dtype == torch.float16 and not torch.equal(rows, residuals.float())


def test_median_sample_keeps_small_batches_whole_and_caps_large_ones() -> None:
    codes = np.array([0] * 5 + [1] * 50 + [2] * 3)
    rows = median_sample(codes, cap=10, seed=1)
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(rows[codes[rows] == 0], np.arange(5))
    assert np.array_equal(rows[codes[rows] == 2], np.arange(55, 58))
    assert (codes[rows] == 1).sum() == 10
    assert np.array_equal(rows, median_sample(codes, cap=10, seed=1))


@pytest.fixture(scope="module")
def shifted():
    reference, target = datasets.pbmc_holdout("CD19+ B", n_batches=2, batch_effect=1.0, seed=0)
    model = ACsleuth(
        prepare_epochs=10,
        train_epochs=3,
        score_epochs=2,
        batch_size=64,
        device="cpu",
        verbose=False,
        random_state=0,
    ).fit(reference)
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
