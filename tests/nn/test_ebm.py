"""The energy classifier's sign conventions: LSE = -E, and the OOD score's orientation."""

from __future__ import annotations

import math

import pytest
import torch

from acsleuth.nn.ebm import EnergyClassifier, lse, ood_score


def test_lse_is_the_log_sum_of_exponentials_and_the_ood_score_its_negative() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 5.0]])
    expected = [math.log(2.0), math.log(math.e + math.e**2), math.log(math.exp(-3) + math.exp(5))]
    assert lse(logits).tolist() == pytest.approx(expected, rel=1e-6)
    assert ood_score(logits).tolist() == pytest.approx([-v for v in expected], rel=1e-6)


def test_larger_logits_mean_more_density_and_a_lower_ood_score() -> None:
    seen, unseen = torch.tensor([[6.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.4, 0.3]])
    assert lse(seen) > lse(unseen)
    assert ood_score(seen) < ood_score(unseen)  # higher = more out of distribution


def test_the_network_standardises_its_input_per_gene() -> None:
    torch.manual_seed(0)
    net = EnergyClassifier(4, 3, widths=(8,), blocks=(1,))
    net.set_standardisation(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 0.0, 1.0, 1.0]))
    x = torch.rand(5, 4)
    z = (x - torch.tensor([1.0, 2.0, 3.0, 4.0])) / torch.tensor(
        [2.0, 1e-3, 1.0, 1.0]
    )  # std floored
    assert torch.allclose(net(x), net.logits(z))
    assert net(x).shape == (5, 3)


def test_widths_and_blocks_must_pair_up() -> None:
    with pytest.raises(ValueError, match="must pair up"):
        EnergyClassifier(4, 3, widths=(8, 4), blocks=(1,))
