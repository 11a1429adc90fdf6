"""The scDET losses (docs/method.md §8.2) against hand computations and slow references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from acsleuth.train.contrastive import (
    logit_adjusted,
    mask_augment,
    prior_regulariser,
    sample_confident,
    sampling_rates,
    simclr,
    smoothed_prior,
    soft_contrastive,
    supcon,
)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(
        torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1
    ).double()


def test_logit_adjustment_is_softmax_of_logits_minus_gamma_log_prior() -> None:
    cosine = torch.tensor([[0.5, -0.2, 0.1], [0.0, 0.3, 0.3]], dtype=torch.float64)
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    got = logit_adjusted(cosine, prior, temperature=0.1, gamma=0.5).numpy()
    logits = cosine.numpy() / 0.1 - 0.5 * np.log([0.5, 0.3, 0.2])
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the rarer class gains: equal cosines of classes 1 and 2, class 2 is rarer
    assert got[1, 2] > got[1, 1]


def test_sampling_rates_by_hand_and_alpha_beta_zero_keeps_all() -> None:
    prior = torch.tensor([0.4, 0.4, 0.1, 0.1])
    in_batch = torch.tensor([True, False, True, False])
    rates = sampling_rates(prior, in_batch, alpha=1.0, beta=0.5)
    np.testing.assert_allclose(rates.numpy(), [0.25, 0.5, 1.0, 1.0], rtol=1e-6)
    p_hat = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), 1)
    ones = sampling_rates(prior, in_batch, alpha=0.0, beta=0.0)
    assert torch.equal(ones, torch.ones(4))
    assert torch.equal(sample_confident(p_hat, ones), torch.arange(50))


def test_sample_confident_keeps_the_most_confident_of_each_class() -> None:
    p_hat = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]])
    kept = sample_confident(p_hat, torch.tensor([0.5, 0.5]))
    # class 0 has 4 cells -> ceil(2) = 2 kept (0.9 and 0.8); class 1 has 1 -> ceil(0.5) = 1
    assert kept.tolist() == [0, 2, 4]


def _supcon_loop(v: torch.Tensor, v2: torch.Tensor, y: list[int], tau: float) -> float:
    total = 0.0
    for i in range(len(y)):
        denom = sum(math.exp(float(v[i] @ v2[a]) / tau) for a in range(len(y)))
        pos = [j for j in range(len(y)) if y[j] == y[i]]
        total += -sum(float(v[i] @ v2[j]) / tau - math.log(denom) for j in pos) / len(pos)
    return total / len(y)


def test_soft_contrastive_with_one_hot_weights_is_supcon() -> None:
    v, v2, y = _unit(7, 5, 0), _unit(7, 5, 1), [0, 1, 0, 2, 1, 0, 2]
    one_hot = F.one_hot(torch.tensor(y), 3).double()
    soft = soft_contrastive(v, v2, one_hot @ one_hot.T, 0.5)
    assert float(soft) == pytest.approx(_supcon_loop(v, v2, y, 0.5), rel=1e-10)
    assert float(supcon(v, v2, torch.tensor(y), 0.5)) == pytest.approx(float(soft), rel=1e-12)


def test_soft_contrastive_with_identity_weights_is_simclr() -> None:
    v, v2 = _unit(6, 4, 2), _unit(6, 4, 3)
    want = F.cross_entropy(v @ v2.T / 0.3, torch.arange(6))
    got = soft_contrastive(v, v2, torch.eye(6, dtype=torch.float64), 0.3)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    assert float(simclr(v, v2, 0.3)) == pytest.approx(float(want), rel=1e-12)


def test_prior_regulariser_is_zero_when_mean_prediction_equals_smoothed_prior() -> None:
    prior = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    target = smoothed_prior(prior, 0.5)
    np.testing.assert_allclose(
        target.numpy(), np.sqrt([0.6, 0.3, 0.1]) / np.sqrt([0.6, 0.3, 0.1]).sum()
    )
    delta = torch.tensor([0.1, -0.05, -0.05], dtype=torch.float64)
    p = torch.stack([target + delta, target - delta])  # two distributions whose mean is target
    assert float(prior_regulariser(p, p, target)) == pytest.approx(0.0, abs=1e-12)
    uniform = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    assert float(prior_regulariser(uniform, uniform, target)) > 0.01


def test_mask_augment_replaces_a_fraction_by_values_of_the_same_gene() -> None:
    x = torch.arange(2000, dtype=torch.float32).reshape(200, 10)
    torch.manual_seed(0)
    view, mask = mask_augment(x, 0.3)
    assert 0.25 < float(mask.mean()) < 0.35
    keep = mask == 0
    assert torch.equal(view[keep], x[keep])
    assert torch.equal(view.long() % 10, x.long() % 10)  # column j holds values of gene j only
