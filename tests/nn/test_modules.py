"""Shapes and invariants of the module I / predictor building blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from acsleuth.nn import Critic, Generator, MemoryBank, Predictor
from acsleuth.train import AdversarialConfig, AdversarialStep, gradient_penalty, train_adversarial
from acsleuth.train.adversarial import critic_terms
from acsleuth.train.optim import adam


@pytest.mark.parametrize("use_memory", [True, False])
def test_generator_shapes_and_nonnegative_output(use_memory: bool) -> None:
    torch.manual_seed(0)
    gen = Generator(37, n_memory=16).train()
    x = torch.rand(8, 37)
    x_hat, z = gen(x, use_memory=use_memory)
    assert x_hat.shape == (8, 37) and z.shape == (8, 256)
    assert (x_hat >= 0).all()
    x_hat.sum().backward()
    assert gen.encoder.net[0][0].weight.grad is not None


def test_memory_changes_the_reconstruction() -> None:
    torch.manual_seed(0)
    gen = Generator(20, n_memory=8).eval()
    x = torch.rand(5, 20)
    with torch.no_grad():
        assert not torch.allclose(gen(x, use_memory=True)[0], gen(x, use_memory=False)[0])


def test_critic_and_predictor_shapes() -> None:
    critic = Critic(30)
    assert critic(torch.rand(6, 30)).shape == (6, 16)
    assert any("parametrizations" in name for name, _ in critic.named_parameters())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in critic.modules())
    assert Predictor(30)(torch.rand(6, 30)).shape == (6,)


def test_memory_ring_buffer_wraps_when_batch_does_not_divide_size() -> None:
    bank = MemoryBank(10, 3)
    batches = [torch.full((4, 3), float(i)) for i in range(1, 4)]
    for b in batches:
        bank.enqueue(b)
    # batch 1 -> rows 0-3, batch 2 -> rows 4-7, batch 3 -> rows 8, 9, 0, 1
    expected = torch.tensor([3, 3, 1, 1, 2, 2, 2, 2, 3, 3], dtype=torch.float32)
    assert torch.equal(bank.queue[:, 0], expected)
    assert int(bank.position) == 2


def test_memory_enqueue_larger_than_queue_keeps_newest() -> None:
    bank = MemoryBank(4, 2)
    z = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    bank.enqueue(z)
    assert torch.equal(bank.queue, z[-4:])
    assert int(bank.position) == 0


def test_memory_state_is_saved_with_the_module() -> None:
    bank = MemoryBank(5, 2)
    bank.enqueue(torch.ones(3, 2))
    state = bank.state_dict()
    assert set(state) == {"queue", "position"} and int(state["position"]) == 3


def test_gradient_penalty_of_a_linear_critic() -> None:
    # C(x) = x W^T: the gradient of mean_k C_k is the mean row of W, the same everywhere
    critic = nn.Linear(5, 16, bias=False)
    w = critic.weight.detach().mean(0)
    gp = gradient_penalty(critic, torch.rand(7, 5), torch.rand(7, 5))
    assert torch.allclose(gp, (w.norm() - 1.0) ** 2)


def test_train_adversarial_runs_the_configured_steps() -> None:
    torch.manual_seed(0)
    gen = nn.Linear(4, 4)
    critic = Critic(4)
    calls = {"step": 0, "after": 0}
    data = [torch.rand(8, 4) for _ in range(3)]

    def step(x: torch.Tensor) -> AdversarialStep:
        calls["step"] += 1
        fake = gen(x)
        return AdversarialStep(x, fake, (fake - x).abs().mean())

    def after(_batch, out: AdversarialStep) -> None:
        calls["after"] += 1
        assert out.fake.shape == (8, 4)

    before = gen.weight.detach().clone()
    history = train_adversarial(
        list(gen.parameters()),
        critic,
        lambda: iter(data),
        step,
        AdversarialConfig(epochs=2, cosine=True),
        after_step=after,
        verbose=False,
    )
    assert len(history) == 2 and set(history[0]) == {"critic", "gp", "generator", "own"}
    assert calls == {"step": 6, "after": 6}
    assert not torch.equal(before, gen.weight)
    assert all(p.requires_grad for p in critic.parameters())


def test_train_adversarial_rejects_an_empty_epoch() -> None:
    gen = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no batch"):
        train_adversarial(
            list(gen.parameters()),
            Critic(2),
            lambda: iter([]),
            lambda x: None,
            AdversarialConfig(epochs=1),
            verbose=False,
        )


def test_critic_terms_equal_three_separate_passes() -> None:
    # no batch norm in the critic: stacking real and fake rows, and caching the spectral weights, change nothing
    torch.manual_seed(0)
    critic = Critic(6).eval()  # no dropout, so the three separate passes are comparable
    real, fake = torch.rand(5, 6), torch.rand(5, 6)
    torch.manual_seed(1)
    terms = critic_terms(critic, real, fake)
    torch.manual_seed(1)
    eps = torch.rand(5, 1)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).mean(1).sum(), mixed)
    assert torch.allclose(terms.gp, ((grad.norm(dim=1) - 1) ** 2).mean(), atol=1e-6)
    assert torch.allclose(terms.real, critic(real).mean(), atol=1e-6)
    assert torch.allclose(terms.fake, critic(fake).mean(), atol=1e-6)


def test_adam_is_fused_on_cpu() -> None:
    opt = adam(nn.Linear(3, 2).parameters(), lr=1e-3, betas=(0.5, 0.999))
    assert opt.param_groups[0]["fused"]
