"""The losses and training loop of the open-world annotator (docs/method.md §8.2).

Each step takes a labelled reference batch and an unlabelled target batch, draws two masked
views of every cell and minimises

``L = L_rec + lambda1 (L_r + L_t + L_reg) + lambda2 (SimCLR(all) + SupCon(ref) + L_soft)``.

The class prior ``pi`` is re-estimated every ``estimate_every`` epochs by a callback (k-means
on the contrastive features with Hungarian matching, :mod:`acsleuth.stages.annotate`).

Deviation from the seed: cosine logits use a student temperature 0.1 and a teacher
temperature annealed 0.07 -> 0.04 (tau = 1 on cosines cannot give confident predictions).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .._logging import progress
from ..nn.annotator import AnnotatorNet
from .checkpoint import (
    Checkpoint,
    Stateful,
    TorchRandomState,
    checkpointed_on_interrupt,
    snapshot,
    states_of,
)
from .guard import DivergenceGuard

_EPS = 1e-8


@dataclass(frozen=True)
class OpenWorldConfig:
    """Every default of the open-world annotator (docs/method.md §8.2; one home)."""

    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    mask_prob: float = 0.3  # p_m of the masking augmentation
    lambda_cls: float = 1.0  # lambda1: L_r + L_t + L_reg
    lambda_con: float = 1.0  # lambda2: SimCLR + SupCon + L_soft
    reg_weight: float = 1.0  # factor on L_reg inside lambda1 (0 = the "no L_reg" ablation)
    soft: bool = True  # False = the "hard" ablation: one-hot argmax pseudo-labels in L_soft
    rho: float = 0.5  # pi_hat = normalise(pi ** rho)
    gamma: float = 0.5  # debiasing: softmax(cos / tau - gamma log pi)
    alpha: float = 0.5  # sampling exponent, classes in the labelled batch
    beta: float = 0.5  # sampling exponent, other classes
    student_temperature: float = 0.1
    teacher_temperature: tuple[float, float] = (0.07, 0.04)  # annealed linearly over training
    contrastive_temperature: float = 0.5
    estimate_every: int = 10  # m: epochs between re-estimates of pi
    kmeans_iter: int = 30
    kmeans_init: int = 3
    seed_prototypes: bool = True  # novel prototypes <- their cluster's mean h at each estimate
    members: int = 2  # networks trained (seeds seed, seed + 100, ...), probabilities averaged
    # who names the type of a cell scDET calls seen: "linear", a logistic regression on the
    # reference's standardised expression (fitted on at most seen_labeller_cells) where its
    # probability exceeds seen_override, else the prototype head; or "scdet", the prototype
    # head always (the seed's rule). Chosen on the dev splits (RESULTS.md, issue 19)
    seen_labels: str = "linear"
    seen_labeller_cells: int = 20_000
    seen_override: float = 0.8
    n_top_genes: int = 3000
    max_retries: int = 3  # divergence guard: restores of the last good state


# ----------------------------------------------------------------------------- the losses
def mask_augment(
    x: Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Mask a fraction ``p`` of entries, each replaced by the same gene in a random batch cell.

    Returns the augmented view and the float mask (1 = replaced).
    """
    mask = (torch.rand(x.shape, generator=generator, device=x.device) < p).to(x.dtype)
    donors = torch.randint(x.shape[0], x.shape, generator=generator, device=x.device)
    return torch.where(mask.bool(), x.gather(0, donors), x), mask


def logit_adjusted(cosine: Tensor, prior: Tensor, temperature: float, gamma: float) -> Tensor:
    """Debiased probabilities ``softmax(cos / tau - gamma log pi)`` (seed eq. 7)."""
    return torch.softmax(cosine / temperature - gamma * torch.log(prior.clamp_min(_EPS)), dim=1)


def sampling_rates(prior: Tensor, in_batch: Tensor, alpha: float, beta: float) -> Tensor:
    """``SR_c = (pi_c / pi_min) ** -alpha`` for classes in the labelled batch, ``** -beta`` else."""
    prior = prior.clamp_min(_EPS)
    exponent = torch.where(in_batch, torch.as_tensor(alpha), torch.as_tensor(beta)).to(prior)
    return (prior / prior.min()) ** (-exponent)


def sample_confident(p_hat: Tensor, rates: Tensor) -> Tensor:
    """Indices of the cells kept: per predicted class c, the ``ceil(SR_c n_c)`` most confident."""
    confidence, label = p_hat.max(1)
    kept = []
    for c in torch.unique(label).tolist():
        members = torch.nonzero(label == c).flatten()
        n_keep = math.ceil(float(rates[c]) * members.numel() - 1e-6)
        order = torch.argsort(confidence[members], descending=True, stable=True)
        kept.append(members[order[:n_keep]])
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=p_hat.device)
    return torch.sort(torch.cat(kept)).values


def soft_contrastive(v: Tensor, v_other: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """``mean_i [-sum_j w_ij log softmax_j(v_i . v~_j / tau)] / sum_j w_ij`` (seed eq. 9).

    ``j`` runs over every cell's other view, the anchor's own included, so identity weights
    give SimCLR (cross-view InfoNCE) and same-label indicator weights give SupCon.
    """
    log_prob = torch.log_softmax(v @ v_other.T / temperature, dim=1)
    per_cell = -(weights * log_prob).sum(1) / weights.sum(1).clamp_min(_EPS)
    return per_cell.mean()


def simclr(v: Tensor, v_other: Tensor, temperature: float) -> Tensor:
    """Unsupervised contrastive loss: the positive of a view is the other view of its cell."""
    return soft_contrastive(
        v, v_other, torch.eye(v.shape[0], device=v.device, dtype=v.dtype), temperature
    )


def supcon(v: Tensor, v_other: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss: positives are the other views of cells with the same label."""
    same = (labels[:, None] == labels[None, :]).to(v.dtype)
    return soft_contrastive(v, v_other, same, temperature)


def prior_regulariser(p: Tensor, p_other: Tensor, prior_hat: Tensor) -> Tensor:
    """``KL(mean p || pi_hat) + KL(mean p~ || pi_hat)`` (seed eq. 5)."""
    target = prior_hat.clamp_min(_EPS)
    total = p.new_zeros(())
    for probs in (p, p_other):
        mean = probs.mean(0).clamp_min(_EPS)
        total = total + (mean * (mean.log() - target.log())).sum()
    return total


def smoothed_prior(prior: Tensor, rho: float) -> Tensor:
    """``pi_hat = pi ** rho / sum(pi ** rho)`` (renormalised: the seed omits it)."""
    powered = prior.clamp_min(_EPS) ** rho
    return powered / powered.sum()


def teacher_temperature(epoch: int, config: OpenWorldConfig) -> float:
    """The teacher's temperature at ``epoch``, linear from the first to the second value."""
    start, end = config.teacher_temperature
    return start + (end - start) * epoch / max(1, config.epochs - 1)


def step_loss(
    net: AnnotatorNet,
    x_ref: Tensor,
    y_ref: Tensor,
    x_tgt: Tensor,
    prior: Tensor,
    config: OpenWorldConfig,
    teacher_tau: float,
) -> dict[str, Tensor]:
    """Every loss term of one step on a reference and a target batch (the total under "loss")."""
    n_ref = x_ref.shape[0]
    x = torch.cat([x_ref, x_tgt])
    views = [mask_augment(x, config.mask_prob) for _ in range(2)]
    outs = [net(xv) for xv, _ in views]
    rec = (
        sum(
            F.mse_loss(o.recon, x) + F.binary_cross_entropy_with_logits(o.mask_logits, m)
            for o, (_, m) in zip(outs, views, strict=True)
        )
        / 2
    )
    log_p = [torch.log_softmax(o.cosine / config.student_temperature, 1) for o in outs]
    loss_r = (F.nll_loss(log_p[0][:n_ref], y_ref) + F.nll_loss(log_p[1][:n_ref], y_ref)) / 2
    v, v_other = outs[0].projection, outs[1].projection
    tau = config.contrastive_temperature
    loss_t, loss_reg, loss_soft = _open_world_terms(
        net, outs, log_p, y_ref, prior, config, teacher_tau
    )
    loss_con = simclr(v, v_other, tau) + supcon(v[:n_ref], v_other[:n_ref], y_ref, tau) + loss_soft
    total = rec + config.lambda_cls * (loss_r + loss_t + config.reg_weight * loss_reg)
    total = total + config.lambda_con * loss_con
    return {
        "loss": total,
        "rec": rec,
        "ref": loss_r,
        "tgt": loss_t,
        "reg": loss_reg,
        "con": loss_con,
    }


def _open_world_terms(
    net: AnnotatorNet,
    outs: list[Any],
    log_p: list[Tensor],
    y_ref: Tensor,
    prior: Tensor,
    config: OpenWorldConfig,
    teacher_tau: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """L_t (cross-view self-distillation on the target), L_reg and L_soft of one step."""
    n_ref = y_ref.shape[0]
    teacher = [torch.softmax(o.cosine.detach() / teacher_tau, 1) for o in outs]
    loss_t = (
        -(
            (teacher[1][n_ref:] * log_p[0][n_ref:]).sum(1).mean()
            + (teacher[0][n_ref:] * log_p[1][n_ref:]).sum(1).mean()
        )
        / 2
    )
    loss_reg = prior_regulariser(log_p[0].exp(), log_p[1].exp(), smoothed_prior(prior, config.rho))
    p_hat = logit_adjusted(
        outs[0].cosine.detach()[n_ref:], prior, config.student_temperature, config.gamma
    )
    in_batch = torch.zeros(net.n_classes, dtype=torch.bool, device=prior.device)
    in_batch[y_ref] = True
    keep = sample_confident(p_hat, sampling_rates(prior, in_batch, config.alpha, config.beta))
    soft = p_hat[keep]
    if not config.soft:
        soft = F.one_hot(soft.argmax(1), net.n_classes).to(soft)
    labels = torch.cat([F.one_hot(y_ref, net.n_classes).to(soft), soft])
    chosen = torch.cat([torch.arange(n_ref, device=prior.device), n_ref + keep])
    v, v_other = outs[0].projection, outs[1].projection
    loss_soft = soft_contrastive(
        v[chosen], v_other[chosen], labels @ labels.T, config.contrastive_temperature
    )
    return loss_t, loss_reg, loss_soft


class CyclingBatches:
    """Endless minibatches of a loader, pass after pass, that a checkpoint can resume.

    Its state is the loader's shuffler before the pass in progress and how many batches of it
    were taken: restoring it redraws that pass's order and skips what was taken.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._new_pass()

    def _new_pass(self) -> None:
        self._start = self.loader.state_dict()  # the permutation is drawn at the first batch
        self._batches = iter(self.loader)
        self._taken = 0

    def __next__(self) -> tuple[np.ndarray, Tensor]:
        try:
            batch = next(self._batches)
        except StopIteration:
            self._new_pass()
            batch = next(self._batches)
        self._taken += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"start": copy.deepcopy(self._start), "taken": self._taken}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loader.load_state_dict(copy.deepcopy(state["start"]))
        self._new_pass()
        for _ in range(int(state["taken"])):
            next(self._batches)
        self._taken = int(state["taken"])


class PriorHistory:
    """The estimates of ``pi`` so far (the last one is in use), as a checkpoint stores them."""

    def __init__(self) -> None:
        self.estimates: list[Tensor] = []

    def state_dict(self) -> dict[str, list[Tensor]]:
        return {"estimates": list(self.estimates)}

    def load_state_dict(self, state: Mapping[str, list[Tensor]]) -> None:
        self.estimates = [p.clone() for p in state["estimates"]]


def train_open_world(
    net: AnnotatorNet,
    reference: Any,
    reference_labels: np.ndarray,
    target: Any,
    estimate_prior: Callable[[int], Tensor],
    config: OpenWorldConfig,
    *,
    checkpoint: Checkpoint | None = None,
    verbose: bool = False,
    desc: str = "annotate",
    priors: PriorHistory | None = None,
    carried: Mapping[str, Stateful] | None = None,
) -> list[dict[str, float]]:
    """Train ``net`` on minibatch loaders of the reference and target (see module docstring).

    ``reference_labels`` holds the integer class of every reference row (seen classes first);
    ``estimate_prior(epoch)`` returns the prior ``pi`` over the K classes from the current
    ``net`` (a function of ``net`` and ``epoch`` only, so that a resumed run repeats it).
    Epochs run under the shared divergence guard (a non-finite loss restores the state before
    the epoch and retries it at half the learning rate). With a ``checkpoint`` the state is
    written every ``checkpoint.every`` epochs, at the end and on Ctrl-C, and a resumed run
    continues from it to the weights of an uninterrupted one (on the CPU); ``carried`` objects
    (the networks and ``priors`` of earlier ensemble members, whose finished stages a resumed
    run skips) are written and restored with it. The estimates are appended to ``priors``.

    Returns the per-epoch mean losses.
    """
    device = next(net.parameters()).device
    labels = torch.as_tensor(reference_labels, dtype=torch.long, device=device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ref_batches = CyclingBatches(reference)
    priors = PriorHistory() if priors is None else priors
    tracked: dict[str, Stateful] = {
        **(carried or {}),
        "net": net,
        "optimizer": optimizer,
        "reference": ref_batches,
        "target": target,
        "priors": priors,
        "random": TorchRandomState(device),
    }
    epoch, history, lr_scale = (
        (0, [], 1.0) if checkpoint is None else checkpoint.begin(desc, tracked)
    )
    guard = DivergenceGuard(
        desc, config.lr, watch="loss", max_loss=math.inf, max_retries=config.max_retries
    )
    guard.lr_scale = lr_scale
    bar = progress(None, desc=desc, total=config.epochs, verbose=verbose)
    bar.update(epoch)
    while epoch < config.epochs:
        good = snapshot(tracked)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * guard.lr_scale
        with checkpointed_on_interrupt(checkpoint, desc, epoch, history, good, guard.lr_scale):
            if epoch % config.estimate_every == 0:
                priors.estimates.append(estimate_prior(epoch).to(device))
            losses = _train_epoch(
                net, optimizer, ref_batches, labels, target, priors.estimates[-1], config, epoch
            )
        if guard.diverged(losses, epoch, tracked, good):
            continue
        history.append(losses)
        epoch += 1
        bar.update(1)
        if checkpoint is not None and checkpoint.due(epoch, config.epochs):
            done = epoch == config.epochs
            checkpoint.save(
                desc, epoch, history, states_of(tracked), lr_scale=guard.lr_scale, done=done
            )
    bar.close()
    net.eval()
    return history


def _train_epoch(
    net: AnnotatorNet,
    optimizer: torch.optim.Optimizer,
    ref_batches: CyclingBatches,
    labels: Tensor,
    target: Any,
    prior: Tensor,
    config: OpenWorldConfig,
    epoch: int,
) -> dict[str, float]:
    """One pass over the target (a reference batch with each target batch); mean losses."""
    net.train()
    tau_t = teacher_temperature(epoch, config)
    sums: dict[str, Tensor] = {}
    n = 0
    for _, x_tgt in target:
        rows, x_ref = next(ref_batches)
        y_ref = labels[torch.as_tensor(rows, device=labels.device)]
        terms = step_loss(net, x_ref, y_ref, x_tgt, prior, config, tau_t)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach()
        n += 1
    return {k: float(v) / n for k, v in sums.items()}
