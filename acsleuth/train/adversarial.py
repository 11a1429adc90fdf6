"""One WGAN-GP loop for every adversarial stage.

A stage supplies its batches and a ``step`` that runs its generator on a batch and returns
the real samples, the generated ones and the generator's own (non-adversarial) loss. The loop
then does ``critic_steps`` critic updates on that batch and one generator update, whose loss is
``own - beta * E[C(fake)]``. The generator's forward pass is shared by the critic and generator
updates: the critic sees it detached, and the generator's parameters do not change in between.

Every epoch starts from a snapshot of the training state. A divergence guard restores it when
the epoch's losses are not finite or the critic's loss explodes, halves the learning rate and
retries, a bounded number of times; with a :class:`~acsleuth.train.Checkpoint` the state is
written every N epochs and, on Ctrl-C, the snapshot is written before the loop stops.

Under ``torch.distributed`` (see :mod:`acsleuth.parallel`) the loop is data-parallel: each
rank feeds its own shard of batches, gradients are averaged over ranks after every backward
pass, and all ranks take the same number of steps per epoch, so their models stay identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import parallel
from .._constants import ADVERSARIAL_WEIGHT, BETAS, GP_WEIGHT, LEARNING_RATE, N_CRITIC, Precision
from .._logging import progress
from .._precision import autocast
from .checkpoint import Checkpoint, Stateful, TorchRandomState, snapshot, states_of
from .guard import DivergenceGuard
from .optim import adam


@dataclass(frozen=True)
class AdversarialConfig:
    """Optimiser and loss settings of a WGAN-GP stage (docs/method.md §1 defaults)."""

    epochs: int
    lr: float = LEARNING_RATE
    betas: tuple[float, float] = BETAS
    critic_steps: int = N_CRITIC
    adversarial_weight: float = ADVERSARIAL_WEIGHT
    gp_weight: float = GP_WEIGHT
    cosine: bool = False
    precision: Precision = "fp32"
    max_retries: int = 3  # divergence guard: restores of the last good state per stage
    max_critic_loss: float = 1e6  # an epoch whose mean |critic loss| passes this has diverged


class AdversarialStep(NamedTuple):
    """What a stage's generator produced for one batch."""

    real: Tensor
    fake: Tensor
    own_loss: Tensor
    aux: Any = None  # anything else ``after_step`` needs (the encoder embeddings)


class CriticTerms(NamedTuple):
    """``E[C(x)]``, ``E[C(x_hat)]`` and the gradient penalty of one critic update."""

    real: Tensor
    fake: Tensor
    gp: Tensor


def critic_terms(critic: nn.Module, real: Tensor, fake: Tensor) -> CriticTerms:
    """The critic's terms of one update: ``E[C(x)]``, ``E[C(x_hat)]`` and the gradient penalty.

    The penalty is ``E[(||grad C(x_bar)||_2 - 1)^2]`` at ``x_bar = eps x + (1 - eps) x_hat``,
    eps ~ U(0,1) per cell. The real and fake rows share one forward pass (the critic has no
    batch norm, so no row's output depends on another row); the interpolated rows get their
    own, so that the penalty's double backward runs over those rows only, not over zeros for
    the others. The spectral-normalised weights are computed once for both passes.
    """
    n = real.shape[0]
    eps = torch.rand(n, 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    with parametrize.cached():
        on_real, on_fake = critic(torch.cat([real, fake])).mean(1).split(n)
        on_mixed = critic(mixed).mean(1)
    (grad,) = torch.autograd.grad(on_mixed.sum(), mixed, create_graph=True)
    return CriticTerms(on_real.mean(), on_fake.mean(), ((grad.norm(dim=1) - 1.0) ** 2).mean())


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """The gradient penalty of :func:`critic_terms` alone."""
    return critic_terms(critic, real, fake).gp


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
    state: Mapping[str, Stateful] | None = None,
    checkpoint: Checkpoint | None = None,
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
    state
        The rest of the training state, by name: the generator module (its buffers hold the
        memory bank) and the minibatch loader (its shuffler). The critic, both optimisers and
        torch's random generator are added here; all of it is snapshotted every epoch for the
        divergence guard and written to ``checkpoint``.
    checkpoint
        Resume stage ``desc`` from it, write to it every ``checkpoint.every`` epochs and at the
        end, and on Ctrl-C write the state at the start of the interrupted epoch, then raise
        :class:`~acsleuth.train.TrainingInterrupted` (single-process runs only).

    Returns
    -------
    Per-epoch means of ``critic``, ``gp``, ``generator`` and ``own`` losses (means over
    all ranks in a distributed run).

    Raises
    ------
    TrainingDiverged
        When an epoch diverged ``config.max_retries + 1`` times in this stage.

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
    (Over 80 lines: the epoch loop, the divergence guard's restore-and-retry and the
    checkpoint hooks share one training state, which splitting would pass around.)
    """
    ctx = parallel.context()
    if checkpoint is not None and ctx.distributed:
        raise ValueError(
            f"{desc}: checkpoints are written by single-process runs only; drop the checkpoint "
            "(--checkpoint-every) or run without torchrun"
        )
    generator_params = list(generator_params)
    critic_params = [p for p in critic.parameters() if p.requires_grad]
    if ctx.distributed:
        parallel.broadcast_module(critic, ctx)
        parallel.broadcast_tensors(generator_params, ctx)
    device = generator_params[0].device
    opt_g = adam(generator_params, lr=config.lr, betas=config.betas)
    opt_c = adam(critic_params, lr=config.lr, betas=config.betas)
    tracked: dict[str, Stateful] = {
        **(state or {}),
        "critic": critic,
        "generator_optimizer": opt_g,
        "critic_optimizer": opt_c,
        "random": TorchRandomState(device),
    }

    def run_epoch() -> list[float]:
        losses: list[Tensor] = []
        for batch in parallel.lockstep(batches(), ctx):
            with autocast(device, config.precision):
                out = step(batch)
            fake = out.fake.detach()
            for _ in range(config.critic_steps):
                with autocast(device, config.precision):
                    terms = critic_terms(critic, out.real, fake)
                    loss_c = terms.fake - terms.real + config.gp_weight * terms.gp
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
            losses.append(torch.stack([loss_c, terms.gp, loss_g, out.own_loss]).detach())
        if not losses:
            raise ValueError(f"{desc}: an epoch produced no batch; the data set is too small")
        means = torch.stack(losses).float().mean(0)
        if ctx.distributed:
            means = parallel.all_reduce_sum(means, ctx) / ctx.world_size
        return means.tolist()  # one host sync per epoch

    epoch, history, lr_scale = (
        (0, [], 1.0) if checkpoint is None else checkpoint.begin(desc, tracked)
    )
    guard = DivergenceGuard(
        desc, config.lr, "critic", config.max_critic_loss, config.max_retries, lr_scale
    )
    bar = progress(None, desc=desc, total=config.epochs, verbose=verbose and ctx.is_main)
    bar.update(epoch)
    while epoch < config.epochs:
        good = snapshot(tracked)
        factor = guard.lr_scale * (_cosine_factor(epoch, config.epochs) if config.cosine else 1.0)
        for opt in (opt_g, opt_c):
            for group in opt.param_groups:
                group["lr"] = config.lr * factor
        try:
            losses = dict(zip(("critic", "gp", "generator", "own"), run_epoch(), strict=True))
        except KeyboardInterrupt:
            if checkpoint is None:
                raise
            checkpoint.save(desc, epoch, history, good, lr_scale=guard.lr_scale)
            raise checkpoint.interrupted(desc, epoch) from None
        if guard.diverged(losses, epoch, tracked, good):
            continue
        history.append(losses)
        epoch += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
        if checkpoint is not None and checkpoint.due(epoch, config.epochs):
            checkpoint.save(
                desc,
                epoch,
                history,
                states_of(tracked),
                lr_scale=guard.lr_scale,
                done=epoch == config.epochs,
            )
    bar.close()
    parallel.average_buffers(critic, ctx)
    return history
