"""The neuralised k-means and DESC's Student-t head as group logits (docs/method.md §8.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth.nn.neural_kmeans import NeuralKMeans, StudentTHead


def _logit(p: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` with ``1 - p_c`` summed from the other entries (no cancellation)."""
    k = p.shape[1]
    rest = torch.stack([p[:, [j for j in range(k) if j != c]].sum(1) for c in range(k)], 1)
    return torch.log(p) - torch.log(rest)


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_neural_kmeans_is_the_logit_of_the_kmeans_softmax(beta: float) -> None:
    gen = torch.Generator().manual_seed(0)
    mu = (
        torch.randn(4, 3, generator=gen, dtype=torch.float64) * 2 + 1
    )  # off-centre: the bias matters
    z = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    head = NeuralKMeans(mu, beta).double()
    o = torch.cdist(z, mu).pow(2)
    expected = _logit(torch.softmax(-beta * o, dim=1))
    finite = expected.isfinite()  # the direct form underflows where p rounds to 0
    assert finite.float().mean() > 0.8
    torch.testing.assert_close(head(z)[finite], expected[finite], rtol=1e-6, atol=1e-6)
    assert head(z).isfinite().all()


def test_first_layer_holds_the_squared_norm_bias() -> None:
    mu = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    head = NeuralKMeans(mu)
    # w_01 = 2 (mu_0 - mu_1) = (4, 3); b_01 = ||mu_1||^2 - ||mu_0||^2 = 1.25 - 5 = -3.75
    torch.testing.assert_close(head.weight[0, 1], torch.tensor([4.0, 3.0]))
    assert head.bias[0, 1].item() == pytest.approx(-3.75)
    z = torch.tensor([[0.3, -0.7]])
    h = head.pairwise(z)[0, 0, 1]
    assert h.item() == pytest.approx(
        ((z - mu[1]) ** 2).sum().item() - ((z - mu[0]) ** 2).sum().item(), abs=1e-5
    )


def test_argmax_of_the_logits_is_the_nearest_centroid() -> None:
    gen = torch.Generator().manual_seed(1)
    mu, z = torch.randn(5, 4, generator=gen), torch.randn(200, 4, generator=gen) * 2
    nearest = torch.cdist(z, mu).argmin(1)
    assert torch.equal(NeuralKMeans(mu, 0.5)(z).argmax(1), nearest)
    assert torch.equal(StudentTHead(mu)(z).argmax(1), nearest)


def test_student_t_head_is_the_logit_of_desc_assignment() -> None:
    from acsleuth.stages.subtype import soft_assignment

    gen = torch.Generator().manual_seed(2)
    mu, z = torch.randn(3, 2, generator=gen).double(), torch.randn(20, 2, generator=gen).double()
    q = soft_assignment(z, mu, 1.0)
    torch.testing.assert_close(StudentTHead(mu).double()(z), _logit(q))


def test_bad_centroids_and_beta_are_refused() -> None:
    with pytest.raises(ValueError, match="K >= 2"):
        NeuralKMeans(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="beta must be > 0"):
        NeuralKMeans(torch.zeros(2, 3), beta=0.0)
    assert np.isfinite(NeuralKMeans(torch.eye(2), 100.0)(torch.full((1, 2), 50.0)).numpy()).all()
