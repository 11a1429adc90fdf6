"""The JEM training loop of CLAMS (docs/method.md §8.1): cross-entropy plus a generative loss on SGLD
samples from a replay buffer, with CLAMS' ELU clipping and on/off gating of that loss.

Every epoch starts from a snapshot of the training state; the shared divergence guard
(:mod:`acsleuth.train.guard`) restores it when the epoch's losses are not finite or the
energies explode, halves the learning rate and retries. After each good epoch the model is
validated and the best-validation weights are kept. With a :class:`~acsleuth.train.Checkpoint`
the state is written every N epochs and on Ctrl-C, and a resumed run continues exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .._logging import progress
from ..nn.ebm import EnergyClassifier, lse
from .checkpoint import Checkpoint, Stateful, TorchRandomState, snapshot, states_of
from .guard import DivergenceGuard
from .sgld import Clip, Gate, ReplayBuffer, Start, clip_generative_loss, noise_start, sgld

LOSSES = ("ce", "generative", "lse_real", "lse_fake", "energy", "on_steps")
"""Per-epoch history: means over steps (``generative`` and ``lse_fake`` over the on-steps)."""


@dataclass(frozen=True)
class JEMConfig:
    """Settings of the JEM/CLAMS loop (docs/method.md §8.1 defaults; ``generative=False``: CE only)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3  # tuned (the authors' code: 1e-4, no weight decay)
    weight_decay: float = 1e-3
    milestones: tuple[int, ...] = (6, 15)  # the learning rate is multiplied by ``decay`` there
    decay: float = 0.3
    generative: bool = True
    clip: Clip = "elu"
    p_on: float = 0.25
    sgld_steps: int = 20
    sgld_step_size: float = 1.0
    sgld_noise: float = 0.01
    buffer_size: int = 10_000
    reinit: float = 0.05
    sgld_start: Start = "data"  # chains start from training cells (tuned), or from N(0, I)
    max_retries: int = 3  # divergence guard: restores of the last good state
    max_energy: float = 1e4  # an epoch whose mean |LSE| passes this has diverged


@dataclass
class JEMResult:
    """What training produced: the best-validation weights are loaded into the model."""

    history: list[dict[str, float]]
    best_epoch: int
    best_validation: tuple[float, float]  # (accuracy, -NLL) of the best epoch; NaN without
    divergences: int


@dataclass
class _Best:
    """The best-validation weights so far, as a :class:`Stateful` (checkpointed with the rest)."""

    epoch: int = -1
    key: tuple[float, float] = (-np.inf, -np.inf)
    weights: dict[str, Tensor] = field(default_factory=dict)

    def offer(self, epoch: int, key: tuple[float, float], model: EnergyClassifier) -> None:
        if key > self.key:
            self.epoch, self.key, self.weights = epoch, key, copy.deepcopy(model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "key": list(self.key), "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.key = int(state["epoch"]), tuple(float(v) for v in state["key"])
        self.weights = copy.deepcopy(state["weights"])


def _lr_factor(epoch: int, config: JEMConfig) -> float:
    return config.decay ** sum(epoch >= m for m in config.milestones)


def train_jem(
    model: EnergyClassifier,
    batches: Iterable[tuple[np.ndarray, Tensor]],
    labels: Tensor,
    validate: Callable[[], tuple[float, float]] | None,
    config: JEMConfig,
    *,
    seed: int,
    desc: str = "classifier",
    verbose: bool = True,
    state: dict[str, Stateful] | None = None,
    checkpoint: Checkpoint | None = None,
    start: Callable[[int], Tensor] | None = None,
) -> JEMResult:
    """Train ``model`` for ``config.epochs`` epochs, keeping its best-validation weights.

    Over 80 lines: one epoch loop whose guard, checkpoint and best-weights steps share its
    local state, as in :func:`~acsleuth.train.adversarial.train_adversarial`.

    Parameters
    ----------
    batches
        Iterated once per epoch: ``(rows, x)`` with ``x`` log-normalised expression.
    labels
        ``(n_cells,)`` int64 class codes, indexed by ``rows``.
    validate
        ``() -> (accuracy, -NLL)`` of the model on the validation cells; higher is better,
        compared in that order. None keeps the last epoch's weights.
    seed
        Seed of the on/off gate.
    state
        More training state to snapshot and checkpoint (the minibatch loader).
    start
        ``n -> (n, G)`` draws of the SGLD start distribution in the standardised space
        (needed when ``config.sgld_start == "data"``); N(0, I) when None.

    Raises
    ------
    TrainingDiverged
        When an epoch diverged ``config.max_retries + 1`` times.
    """
    if start is None and config.sgld_start == "data":
        raise ValueError(f"{desc}: sgld_start='data' needs start= (a sampler of training cells)")
    device = labels.device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    buffer = ReplayBuffer(
        config.buffer_size, start or noise_start(model.mean.numel(), device), reinit=config.reinit
    )
    gate, best = Gate(config.p_on, seed), _Best()
    tracked: dict[str, Stateful] = {
        **(state or {}),
        "model": model,
        "optimizer": optimizer,
        "buffer": buffer,
        "gate": gate,
        "best": best,
        "random": TorchRandomState(device),
    }

    def step(x: Tensor, y: Tensor) -> Tensor:
        z = model.standardise(x)
        logits = model.logits(z)
        ce = F.cross_entropy(logits, y)
        loss, zero = ce, ce.new_zeros(())
        generative, lse_real, lse_fake = zero, lse(logits).mean(), zero
        if config.generative and gate():
            index, start = buffer.draw(z.shape[0])
            model.eval()
            fake = sgld(
                lambda v: lse(model.logits(v)),
                start,
                steps=config.sgld_steps,
                step_size=config.sgld_step_size,
                noise=config.sgld_noise,
            )
            model.train()
            buffer.put(index, fake)
            lse_fake = lse(model.logits(fake)).mean()
            generative = lse_fake - lse_real
            loss = loss + clip_generative_loss(generative, config.clip)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        energy = torch.maximum(lse_real.abs(), lse_fake.abs())
        on = torch.ones_like(ce) if lse_fake.requires_grad else zero
        return torch.stack([ce, generative, lse_real, lse_fake, energy, on]).detach()

    def run_epoch() -> dict[str, float]:
        model.train()
        steps = [step(x, labels[torch.as_tensor(rows, device=device)]) for rows, x in batches]
        if not steps:
            raise ValueError(f"{desc}: an epoch produced no batch; the training set is too small")
        table = torch.stack(steps)
        means = table.mean(0)
        means[[1, 3]] = table[:, [1, 3]].sum(0) / table[:, 5].sum().clamp_min(1)  # over on-steps
        means[5] = table[:, 5].sum()
        return dict(zip(LOSSES, means.tolist(), strict=True))

    epoch, history, lr_scale = (
        (0, [], 1.0) if checkpoint is None else checkpoint.begin(desc, tracked)
    )
    guard = DivergenceGuard(
        desc, config.lr, "energy", config.max_energy, config.max_retries, lr_scale
    )
    bar = progress(None, desc=desc, total=config.epochs, verbose=verbose)
    bar.update(epoch)
    while epoch < config.epochs:
        good = snapshot(tracked)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * guard.lr_scale * _lr_factor(epoch, config)
        try:
            losses = run_epoch()
        except KeyboardInterrupt:
            if checkpoint is None:
                raise
            checkpoint.save(desc, epoch, history, good, lr_scale=guard.lr_scale)
            raise checkpoint.interrupted(desc, epoch) from None
        if guard.diverged(losses, epoch, tracked, good):
            continue
        model.eval()
        if validate is not None:
            best.offer(epoch, validate(), model)
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
    model.eval()
    if validate is None:  # the last epoch's weights are the model's own: no copy to keep
        return JEMResult(history, epoch - 1, (np.nan, np.nan), guard.retries)
    model.load_state_dict(best.weights)
    return JEMResult(history, best.epoch, best.key, guard.retries)
