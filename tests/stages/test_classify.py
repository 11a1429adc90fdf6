"""The classifier's stage helpers: the stratified split, streamed prediction, the temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from classify_toy import toy

from acsleuth import metrics
from acsleuth.data import prepare
from acsleuth.nn.ebm import EnergyClassifier
from acsleuth.stages.classify import fit_temperature, predict_logits, summarise, validation_split


def test_the_validation_split_is_stratified_and_keeps_a_training_cell_per_type() -> None:
    codes = np.repeat([0, 1, 2], [50, 20, 2])
    train, validation = validation_split(codes, 0.1, seed=0)
    assert np.bincount(codes[validation], minlength=3).tolist() == [5, 2, 0]
    assert np.bincount(codes[train], minlength=3).tolist() == [45, 18, 2]
    assert not set(train) & set(validation) and len(train) + len(validation) == codes.size
    again = validation_split(codes, 0.1, seed=0)
    assert np.array_equal(again[1], validation)


def test_prediction_streams_batches_and_matches_one_pass(monkeypatch) -> None:
    source = prepare(toy(n_per_type=40, seed=0), name="target")
    torch.manual_seed(0)
    net = EnergyClassifier(source.n_genes, 3, widths=(8,), blocks=(1,)).eval()
    sizes: list[int] = []
    rows = source.rows

    def counted(index):
        out = rows(index)
        sizes.append(out.shape[0])
        return out

    monkeypatch.setattr(source, "rows", counted)
    logits, distance = predict_logits(net, source, batch_size=16, device=torch.device("cpu"))
    assert max(sizes) == 16 and sum(sizes) == 120  # never more than a batch in memory
    assert distance is None  # no index: the energy alone
    with torch.no_grad():
        expected = net(torch.from_numpy(rows(slice(None)))).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_the_temperature_calibrates_probabilities_but_not_the_ood_score() -> None:
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]], dtype=np.float32)
    codes = np.array([0, 1, 1, 0])  # overconfident: 3 of 4 right at confidence 0.98
    temperature = fit_temperature(logits, codes)
    assert temperature > 1.0
    _, confidence, score = summarise(logits, temperature)
    plain = summarise(logits)
    assert confidence.max() < plain[1].max()
    np.testing.assert_array_equal(score, plain[2])
    # the best temperature sets the confidence near the accuracy: p = 0.75 at 4 / T = ln 3
    assert temperature == pytest.approx(4.0 / np.log(3.0), rel=0.06)


def test_the_fitted_temperature_lowers_the_ece_of_overconfident_logits() -> None:
    gen = np.random.default_rng(0)
    codes = gen.integers(0, 3, 300)
    noisy = np.where(gen.random(300) < 0.3, gen.integers(0, 3, 300), codes)  # ~80 % right
    logits = 6.0 * np.eye(3, dtype=np.float32)[noisy]  # confidence 0.995 everywhere
    temperature = fit_temperature(logits, codes)
    before = summarise(logits)[0]
    after = summarise(logits, temperature)[0]
    correct = before.argmax(1) == codes
    ece_before = metrics.ece(correct, before.max(1))
    ece_after = metrics.ece(correct, after.max(1))
    assert temperature > 1.0 and ece_before > 0.15 and ece_after < 0.02
