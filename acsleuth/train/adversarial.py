"""One WGAN-GP loop for every adversarial stage.

A stage supplies its batches and a ``step`` that runs its generator on a batch and returns
the real samples, the generated ones and the generator's own (non-adversarial) loss. The loop
then does ``critic_steps`` critic updates on that batch and one generator update, whose loss is
``own - beta * E[C(fake)]``. The generator's forward pass is shared by the critic and generator
updates: the critic sees it detached, and the generator's parameters do not change in between.

Under ``torch.distributed`` (see :mod:`acsleuth.parallel`) the loop is data-parallel: each
rank feeds its own shard of batches, gradients are averaged over ranks after every backward
pass, and all ranks take the same number of steps per epoch, so their models stay identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .. import parallel
from .._logging import progress
from .._precision import Precision, autocast


@dataclass(frozen=True)
class AdversarialConfig:
    """Optimiser and loss settings of a WGAN-GP stage (SPEC §1 defaults)."""

    epochs: int
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    critic_steps: int = 2
    adversarial_weight: float = 1.0
    gp_weight: float = 10.0
    cosine: bool = False
    precision: Precision = "fp32"


class AdversarialStep(NamedTuple):
    """What a stage's generator produced for one batch."""

    real: Tensor
    fake: Tensor
    own_loss: Tensor
    aux: Any = None  # anything else ``after_step`` needs (the encoder embeddings)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """``E[(||grad C(x_bar)||_2 - 1)^2]`` at ``x_bar = eps x + (1 - eps) x_hat``, eps ~ U(0,1) per cell."""
    eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).mean(1).sum(), mixed, create_graph=True)
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


def _cosine_factor(epoch: int, epochs: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def train_adversarial(
    generator_params: Sequence[nn.Parameter],
    critic: nn.Module,
    batches: Callable[[], Iterable[Any]],
    step: Callable[[Any], AdversarialStep],
    config: AdversarialConfig,
    *,
    after_step: Callable[[Any, AdversarialStep], None] | None = None,
    desc: str = "train",
    verbose: bool = True,
) -> list[dict[str, float]]:
    """Train a generator against ``critic`` for ``config.epochs`` epochs.

    Parameters
    ----------
    generator_params
        The parameters the generator update optimises.
    critic
        ``(B, G) -> (B, k)``; its mean over the k outputs is the critic value.
    batches
        Called once per epoch; yields the batches ``step`` understands.
    step
        Runs the generator (with gradients) on a batch.
    after_step
        Called with the batch and the step's output after each generator update (the
        memory bank's enqueue).

    Returns
    -------
    Per-epoch means of ``critic``, ``gp``, ``generator`` and ``own`` losses (means over
    all ranks in a distributed run).

    Notes
    -----
    In a distributed run every rank calls this with its own ``batches``. The critic and
    ``generator_params`` are first broadcast from rank 0; after every ``backward`` the
    gradients are averaged over ranks (:func:`acsleuth.parallel.average_gradients`); each
    epoch takes as many steps as the rank with the fewest batches (one agreement per epoch
    when ``batches()`` returns something with a ``len``, one per step otherwise); at the end
    the critic's floating-point buffers are averaged. The generator's buffers (BatchNorm
    statistics, the memory bank) are the caller's: average them with
    :func:`acsleuth.parallel.average_buffers`. Only rank 0 shows a progress bar.
    """
    ctx = parallel.context()
    generator_params = list(generator_params)
    critic_params = [p for p in critic.parameters() if p.requires_grad]
    if ctx.distributed:
        parallel.broadcast_module(critic, ctx)
        parallel.broadcast_tensors(generator_params, ctx)
    device = generator_params[0].device
    opt_g = torch.optim.Adam(generator_params, lr=config.lr, betas=config.betas)
    opt_c = torch.optim.Adam(critic_params, lr=config.lr, betas=config.betas)
    history: list[dict[str, float]] = []
    bar = progress(range(config.epochs), desc=desc, verbose=verbose and ctx.is_main)
    for epoch in bar:
        if config.cosine:
            for opt in (opt_g, opt_c):
                for group in opt.param_groups:
                    group["lr"] = config.lr * _cosine_factor(epoch, config.epochs)
        losses: list[Tensor] = []
        for batch in parallel.lockstep(batches(), ctx):
            with autocast(device, config.precision):
                out = step(batch)
            fake = out.fake.detach()
            for _ in range(config.critic_steps):
                with autocast(device, config.precision):
                    gp = gradient_penalty(critic, out.real, fake)
                    loss_c = critic(fake).mean() - critic(out.real).mean() + config.gp_weight * gp
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                parallel.average_gradients(critic_params, ctx)
                opt_c.step()
            critic.requires_grad_(False)
            with autocast(device, config.precision):
                loss_g = out.own_loss - config.adversarial_weight * critic(out.fake).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            parallel.average_gradients(generator_params, ctx)
            opt_g.step()
            critic.requires_grad_(True)
            if after_step is not None:
                after_step(batch, out)
            losses.append(torch.stack([loss_c, gp, loss_g, out.own_loss]).detach())
        if not losses:
            raise ValueError(f"{desc}: an epoch produced no batch; the data set is too small")
        means = torch.stack(losses).float().mean(0)
        if ctx.distributed:
            means = parallel.all_reduce_sum(means, ctx) / ctx.world_size
        means = means.tolist()  # one host sync per epoch
        history.append(dict(zip(("critic", "gp", "generator", "own"), means, strict=True)))
        bar.set_postfix({k: f"{v:.3g}" for k, v in history[-1].items()})
    parallel.average_buffers(critic, ctx)
    return history
