"""The classifier's stage helpers: the stratified split, streamed prediction, the temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from classify_toy import FAST, toy

from acsleuth import CellTypeClassifier, metrics
from acsleuth.data import prepare
from acsleuth.nn.ebm import EnergyClassifier
from acsleuth.stages import classify
from acsleuth.stages.classify import (
    fit_temperature,
    predict_logits,
    stratified_folds,
    summarise,
    validation_split,
)


def test_the_validation_split_is_stratified_and_keeps_a_training_cell_per_type() -> None:
    codes = np.repeat([0, 1, 2], [50, 20, 2])
    train, validation = validation_split(codes, 0.1, seed=0)
    assert np.bincount(codes[validation], minlength=3).tolist() == [5, 2, 0]
    assert np.bincount(codes[train], minlength=3).tolist() == [45, 18, 2]
    assert not set(train) & set(validation) and len(train) + len(validation) == codes.size
    again = validation_split(codes, 0.1, seed=0)
    assert np.array_equal(again[1], validation)


def test_stratified_folds_deal_every_type_round_the_folds() -> None:
    codes = np.repeat([0, 1, 2], [12, 7, 2])
    folds = stratified_folds(codes, 5, seed=0)
    per_fold = [np.bincount(codes[folds == f], minlength=3).tolist() for f in range(5)]
    assert [row[0] for row in per_fold] == [3, 3, 2, 2, 2]  # 12 cells: 3, 3, 2, 2, 2
    assert [row[1] for row in per_fold] == [2, 2, 1, 1, 1]
    assert [row[2] for row in per_fold] == [1, 1, 0, 0, 0]
    assert np.array_equal(stratified_folds(codes, 5, seed=0), folds)
    assert not np.array_equal(stratified_folds(codes, 5, seed=1), folds)  # the order is seeded


def _record_fits(monkeypatch) -> tuple[list[dict], list[int]]:
    """Spy on the classifier stage: the rows and epochs of every trained network, and the
    number of cells each temperature was fitted on."""
    trained, fitted = [], []
    train_network, fit_temperature = classify.train_network, classify.fit_temperature

    def spy_train(source, codes, n_classes, rows, config, training, **kwargs):
        trained.append({"rows": set(rows.tolist()), "epochs": training.epochs, **kwargs})
        return train_network(source, codes, n_classes, rows, config, training, **kwargs)

    def spy_temperature(logits, codes):
        fitted.append(len(codes))
        return fit_temperature(logits, codes)

    monkeypatch.setattr(classify, "train_network", spy_train)
    monkeypatch.setattr(classify, "fit_temperature", spy_temperature)
    return trained, fitted


def test_the_temperature_is_fitted_on_validation_and_out_of_fold_training_cells(
    monkeypatch,
) -> None:
    trained, fitted = _record_fits(monkeypatch)
    reference = toy(n_per_type=20)
    model = CellTypeClassifier(random_state=0, **FAST).fit(reference, label_key="cell_type")
    main, *folds = trained
    validation = set(range(reference.n_obs)) - main["rows"]
    assert len(validation) == 6 and main["validation_rows"] is not None
    assert len(folds) == 5 and all(f.get("validation_rows") is None for f in folds)
    assert all(f["epochs"] == model.best_epoch_ + 1 for f in folds)  # the kept network's
    for cell in main["rows"]:  # each training cell is left out of exactly one fold's network
        assert sum(cell not in f["rows"] for f in folds) == 1
    assert all(not f["rows"] & validation for f in folds)
    assert fitted == [reference.n_obs]  # 6 validation + 54 out-of-fold training cells


@pytest.mark.parametrize("settings", [{"calibration_folds": 0}, {"calibration_cells": 6}])
def test_enough_validation_cells_or_no_folds_fit_the_temperature_on_them_alone(
    monkeypatch, settings
) -> None:
    trained, fitted = _record_fits(monkeypatch)
    CellTypeClassifier(random_state=0, **FAST, **settings).fit(
        toy(n_per_type=20), label_key="cell_type"
    )
    assert len(trained) == 1 and fitted == [6]


def test_prediction_streams_batches_and_matches_one_pass(monkeypatch) -> None:
    source = prepare(toy(n_per_type=40, seed=0), name="target")
    torch.manual_seed(0)
    net, *members = [
        EnergyClassifier(source.n_genes, 3, widths=(8,), blocks=(1,)) for _ in range(3)
    ]
    for m in members:  # each member standardises with its own moments
        m.set_standardisation(torch.rand(source.n_genes), 1.0 + torch.rand(source.n_genes))
    sizes: list[int] = []
    rows = source.rows

    def counted(index):
        out = rows(index)
        sizes.append(out.shape[0])
        return out

    monkeypatch.setattr(source, "rows", counted)
    alone = predict_logits(net, source, batch_size=16, device=torch.device("cpu"))
    assert max(sizes) == 16 and sum(sizes) == 120  # never more than a batch in memory
    assert alone.distance is None  # no index: the energy alone
    assert alone.voted is alone.logits  # no members: the kept network's own logits
    sizes.clear()
    voted = predict_logits(net, source, batch_size=16, device=torch.device("cpu"), members=members)
    assert sum(sizes) == 120  # the members ride the same single pass
    with torch.no_grad():
        x = torch.from_numpy(rows(slice(None)))
        each = [n.eval()(x).numpy() for n in (net, *members)]
    np.testing.assert_allclose(alone.logits, each[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(voted.logits, alone.logits)
    np.testing.assert_allclose(voted.voted, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(voted.voted, alone.logits, atol=1e-3)


def test_the_cross_fitted_networks_vote_on_p_y_but_not_on_the_ood_score() -> None:
    reference, target = toy(n_per_type=20), toy(n_per_type=15, types=(0, 1, 2, 3), seed=1)
    voting = CellTypeClassifier(random_state=0, **FAST).fit(reference, label_key="cell_type")
    alone = CellTypeClassifier(random_state=0, ensemble=False, **FAST).fit(
        reference, label_key="cell_type"
    )
    assert len(voting.members_) == 5 and alone.members_ == []
    both, one = voting.classify(target), alone.classify(target)
    np.testing.assert_array_equal(both.ood_score, one.ood_score)  # the same kept network
    np.testing.assert_array_equal(both.energy, one.energy)
    assert voting.temperature_ == alone.temperature_ and voting.threshold_ == alone.threshold_
    source = prepare(target, genes=voting.genes_, name="target")
    with torch.no_grad():
        x = torch.from_numpy(source.rows(slice(None)))
        logits = [n.eval()(x) for n in (voting.network_, *voting.members_)]
    by_hand = torch.softmax(torch.stack(logits).mean(0) / voting.temperature_, 1).numpy()
    np.testing.assert_allclose(both.proba, by_hand, rtol=1e-4, atol=1e-6)
    kept = torch.softmax(logits[0] / alone.temperature_, 1).numpy()
    np.testing.assert_allclose(one.proba, kept, rtol=1e-4, atol=1e-6)
    assert not np.allclose(both.proba, one.proba, atol=1e-3)
    without_folds = CellTypeClassifier(random_state=0, calibration_folds=0, **FAST)
    assert without_folds.fit(reference, label_key="cell_type").members_ == []


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
