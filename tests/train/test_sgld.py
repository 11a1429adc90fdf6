"""CLAMS' regularisers of the generative loss, the SGLD sampler and its replay buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acsleuth.nn.ebm import EnergyClassifier, lse
from acsleuth.train.sgld import Gate, ReplayBuffer, clip_generative_loss, noise_start, sgld


def test_elu_clipping_floors_negative_losses_at_minus_one_and_passes_positive_ones() -> None:
    loss = torch.tensor([-50.0, -1.0, 0.0, 2.5])
    clipped = clip_generative_loss(loss, "elu")
    assert clipped.tolist() == pytest.approx([math.exp(-50) - 1, math.exp(-1) - 1, 0.0, 2.5])
    assert clipped.min() >= -1.0
    assert torch.equal(clip_generative_loss(loss, "none"), loss)
    with pytest.raises(ValueError, match="clip must be one of"):
        clip_generative_loss(loss, "relu")


def test_elu_clipping_stops_the_gradient_of_a_very_negative_loss() -> None:
    loss = torch.tensor(-30.0, requires_grad=True)
    clip_generative_loss(loss, "elu").backward()
    assert loss.grad.item() == pytest.approx(math.exp(-30))


def test_the_gate_is_on_a_quarter_of_steps_and_replays_with_its_seed() -> None:
    gate = Gate(0.25, seed=7)
    draws = [gate() for _ in range(8000)]
    assert np.mean(draws) == pytest.approx(0.25, abs=0.015)
    again = Gate(0.25, seed=7)
    assert [again() for _ in range(8000)] == draws
    other = Gate(0.25, seed=8)
    assert [other() for _ in range(8000)] != draws
    state = gate.state_dict()
    ahead = [gate() for _ in range(50)]
    gate.load_state_dict(state)
    assert [gate() for _ in range(50)] == ahead
    with pytest.raises(ValueError, match="p_on"):
        Gate(0.0, seed=0)


def test_an_sgld_step_raises_the_log_density_of_every_chain() -> None:
    torch.manual_seed(0)
    net = EnergyClassifier(10, 4, widths=(16,), blocks=(1,)).eval()
    start = torch.randn(64, 10)
    moved = sgld(lambda v: lse(net.logits(v)), start, steps=1, step_size=0.01, noise=0.0)
    with torch.no_grad():
        before, after = lse(net.logits(start)), lse(net.logits(moved))
    assert (after > before).all()
    assert not moved.requires_grad


def test_the_replay_buffer_restarts_five_percent_of_drawn_chains() -> None:
    torch.manual_seed(0)
    buffer = ReplayBuffer(1000, noise_start(3, "cpu"), reinit=0.05)
    buffer.samples.fill_(100.0)  # chains far from the N(0, I) start distribution
    _, x = buffer.draw(40_000)
    restarted = (x != 100.0).all(1).float().mean().item()
    assert restarted == pytest.approx(0.05, abs=0.004)
    index, x = buffer.draw(8)
    buffer.put(index, torch.zeros(8, 3))
    assert (buffer.samples[index] == 0).all()
