"""The MMD predictor's training helpers and its behaviour on separable residuals."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from acsleuth.metrics import auroc
from acsleuth.stages.mmd import (
    ScorerConfig,
    fit_predictor,
    minibatches,
    predict_logits,
    pseudo_labels,
)


def _residuals(n_normal: int = 150, n_anomal: int = 50, genes: int = 20, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(n_normal, genes, generator=gen)
    shift = torch.zeros(genes)
    shift[:5] = 2.5
    anomal = torch.randn(n_anomal, genes, generator=gen) + shift
    truth = torch.cat([torch.zeros(n_normal), torch.ones(n_anomal)]).bool()
    anchors = torch.randn(100, genes, generator=gen)
    return torch.cat([normal, anomal]), truth, anchors


def test_pseudo_labels_mark_the_top_fraction() -> None:
    labels = pseudo_labels(torch.tensor([0.1, 5.0, 3.0, -1.0]), 0.5)
    assert labels.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert pseudo_labels(torch.tensor([1.0, 2.0]), 0.01).sum() == 1  # at least one


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (10, None, [10]),
        (10, 4, [4, 4]),
        (13, 4, [4, 4, 4]),
        (16, 4, [4, 4, 4, 4]),
        (20, 8, [8, 8, 4]),
        (3, 8, [3]),
    ],
)
def test_minibatches_drop_only_a_tail_too_small_for_two_groups(n, size, expected) -> None:
    batches = minibatches(n, size, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == expected
    rows = torch.cat(batches)
    assert len(set(rows.tolist())) == len(rows)  # no row twice
    if size is not None:  # drop_last (distributed ranks): only full batches
        full = minibatches(n, size, torch.Generator().manual_seed(0), drop_last=True)
        assert [len(b) for b in full] == [size] * (n // size)


@pytest.mark.parametrize("kernel", ["linear", "gaussian"])
def test_warm_started_anchored_predictor_separates_planted_anomalies(kernel) -> None:
    residuals, truth, anchors = _residuals()
    config = ScorerConfig(epochs=10, kernel=kernel, batch_size=64, warm_epochs=10, lr=1e-3)
    torch.manual_seed(0)
    predictor = fit_predictor(
        residuals,
        ratio=None,
        config=config,
        ranking=residuals.norm(dim=1),
        anchors=anchors,
        seed=0,
        verbose=False,
    )
    logits = predict_logits(predictor, residuals)
    assert auroc(truth.numpy(), logits.numpy()) > 0.97


def test_paper_mode_finds_the_planted_split_in_some_orientation() -> None:
    residuals, truth, _ = _residuals()
    torch.manual_seed(0)
    predictor = fit_predictor(
        residuals, ratio=0.25, config=ScorerConfig(epochs=60, lr=1e-3), seed=0, verbose=False
    )
    auc = auroc(truth.numpy(), predict_logits(predictor, residuals).numpy())
    assert max(auc, 1.0 - auc) > 0.9  # the objective is symmetric in the two groups


def test_warm_start_needs_a_ranking_and_anchors_need_matching_genes() -> None:
    residuals, _, anchors = _residuals()
    with pytest.raises(ValueError, match="needs a ranking"):
        fit_predictor(residuals, ratio=None, config=ScorerConfig(warm_epochs=1), verbose=False)
    with pytest.raises(ValueError, match="anchors have 3 genes"):
        fit_predictor(
            residuals,
            ratio=None,
            config=replace(ScorerConfig(), epochs=1),
            anchors=anchors[:, :3],
            verbose=False,
        )


def test_same_seed_same_predictor() -> None:
    residuals, _, anchors = _residuals()
    config = ScorerConfig(epochs=2, batch_size=32, warm_epochs=2)
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        p = fit_predictor(
            residuals,
            ratio=0.25,
            config=config,
            ranking=residuals.norm(dim=1),
            anchors=anchors,
            seed=5,
            verbose=False,
        )
        outs.append(predict_logits(p, residuals))
    assert torch.equal(outs[0], outs[1])


def _fit_counting(monkeypatch, residuals, config: ScorerConfig) -> tuple[int, torch.Tensor]:
    """The predictor's logits and how many MMD losses its training took."""
    import acsleuth.stages.mmd as mmd

    calls = []
    real = mmd.gamma_mmd_loss
    monkeypatch.setattr(mmd, "gamma_mmd_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(1)
    p = fit_predictor(
        residuals, ratio=None, config=config, ranking=residuals.norm(dim=1), seed=5, verbose=False
    )
    return len(calls), predict_logits(p, residuals)


def test_an_epoch_takes_at_most_epoch_cells_worth_of_minibatches(monkeypatch) -> None:
    residuals, _, _ = _residuals()  # 200 cells: 6 minibatches of 32 and one of the last 8
    config = ScorerConfig(epochs=3, batch_size=32, warm_epochs=1, epoch_cells=None)
    steps, _ = _fit_counting(monkeypatch, residuals, config)
    assert steps == 3 * 7
    steps, _ = _fit_counting(monkeypatch, residuals, replace(config, epoch_cells=70))
    assert steps == 3 * 3  # ceil(70 / 32) minibatches per epoch
    # a target of at most epoch_cells cells trains exactly as without the cap
    _, capped = _fit_counting(monkeypatch, residuals, replace(config, epoch_cells=200))
    _, free = _fit_counting(monkeypatch, residuals, config)
    assert torch.equal(capped, free)
