"""Stage II: match every target normal cell to its "kin" reference cell (SPEC §2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import Critic
from ..ops import kin_topk
from ..train import AdversarialConfig, AdversarialStep, train_adversarial

Metric = Literal["cosine", "dot"]


@dataclass(frozen=True)
class KinConfig(AdversarialConfig):
    """Settings of the learned mapping ``Z_T_hat = ReLU(M) Z_R`` (SPEC §2).

    Each row of ``M`` gets one update per epoch, so it takes a larger learning rate and
    more cells per minibatch than the expression GANs. ``init_weight`` is the share of the
    initial row weight on the nearest candidate (the rest is spread evenly over all ``k``):
    training starts near the nearest-neighbour solution with every weight positive, so
    every candidate can still gain weight (a ReLU at zero has no gradient).
    """

    epochs: int = 20
    lr: float = 3e-3
    k: int = 32
    batch_size: int = 256
    metric: Metric = "cosine"
    reconstruction_weight: float = 30.0  # alpha
    init_weight: float = 0.5


def _check_embeddings(target_emb: Tensor, reference_emb: Tensor) -> None:
    if target_emb.ndim != 2 or reference_emb.ndim != 2:
        raise ValueError(
            f"kin: embeddings must be (cells, p) matrices, got target {tuple(target_emb.shape)} "
            f"and reference {tuple(reference_emb.shape)}"
        )
    if reference_emb.shape[0] == 0:
        raise ValueError("kin: the reference has no cell to match target cells to")


def nearest_kin(target_emb: Tensor, reference_emb: Tensor, *, metric: Metric = "cosine") -> np.ndarray:
    """The most similar reference cell of every target cell (ties: the lowest index).

    Parameters
    ----------
    target_emb
        ``(N_T, p)`` encoder embeddings of target normal cells.
    reference_emb
        ``(N_R, p)`` embeddings of reference cells, same device and dtype.
    metric
        ``"cosine"`` or ``"dot"`` (the reference library's choice).

    Returns
    -------
    ``(N_T,)`` int64 reference indices. Streams over reference tiles: O(N) memory.
    """
    _check_embeddings(target_emb, reference_emb)
    if target_emb.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, index = kin_topk(target_emb, reference_emb, k=1, metric=metric)
    return index[:, 0].cpu().numpy()


class KinMapping(nn.Module):
    """``ReLU(M)`` restricted to each target cell's ``k`` candidates: ``(N_T, k)`` weights."""

    def __init__(self, candidates: Tensor, init_weight: float) -> None:
        super().__init__()
        n_target, k = candidates.shape
        self.register_buffer("candidates", candidates)
        weight = torch.full((n_target, k), (1.0 - init_weight) / k, device=candidates.device)
        weight[:, 0] += init_weight  # candidates are sorted by similarity: column 0 is the nearest
        self.weight = nn.Parameter(weight)

    def forward(self, rows: Tensor, reference_emb: Tensor) -> Tensor:
        """``(b,)`` target rows -> ``(b, p)`` mapped embeddings ``sum_j ReLU(M_ij) Z_R[c_ij]``."""
        return torch.einsum(
            "bk,bkp->bp", F.relu(self.weight[rows]), reference_emb[self.candidates[rows]]
        )

    def kin(self) -> Tensor:
        """``(N_T,)`` the candidate of largest weight per row (ties: the most similar one)."""
        best = self.weight.detach().argmax(dim=1, keepdim=True)
        return self.candidates.gather(1, best)[:, 0]


def learned_kin(
    target_emb: Tensor,
    reference_emb: Tensor,
    *,
    config: KinConfig | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> np.ndarray:
    """Kin from the paper's adversarially trained non-negative mapping (SPEC §2).

    ``Z_T_hat = ReLU(M) Z_R`` with each row of ``M`` restricted to the target cell's
    ``config.k`` most similar reference cells (``config.metric``), so ``M`` is
    ``N_T x k``. The generator loss is ``alpha E|Z_T - Z_T_hat|_1 - beta E[C_2(Z_T_hat)]``
    with a WGAN-GP critic :class:`~acsleuth.nn.Critic` on the embeddings; minibatches are
    random target rows drawn with ``seed`` (the critic's weights and dropout use the global
    torch RNG, as in the other stages).

    Parameters
    ----------
    target_emb
        ``(N_T, p)`` encoder embeddings of target normal cells.
    reference_emb
        ``(N_R, p)`` embeddings of reference cells on the same device (both are used in
        float32).
    config
        Training settings; :class:`KinConfig` defaults when None. ``k`` is capped at ``N_R``.

    Returns
    -------
    ``(N_T,)`` int64 reference indices: the candidate of largest weight in each row.
    """
    config = config or KinConfig()
    _check_embeddings(target_emb, reference_emb)
    n_target = target_emb.shape[0]
    if n_target == 0:
        return np.zeros(0, dtype=np.int64)
    target_emb, reference_emb = target_emb.detach().float(), reference_emb.detach().float()
    k = min(config.k, reference_emb.shape[0])
    _, candidates = kin_topk(target_emb, reference_emb, k=k, metric=config.metric)
    mapping = KinMapping(candidates, config.init_weight)
    critic = Critic(target_emb.shape[1]).to(target_emb.device)
    critic.train()
    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[Tensor]:
        order = torch.randperm(n_target, generator=gen).to(target_emb.device)
        return iter(order.split(config.batch_size))

    def step(rows: Tensor) -> AdversarialStep:
        real, fake = target_emb[rows], mapping(rows, reference_emb)
        return AdversarialStep(real, fake, config.reconstruction_weight * F.l1_loss(fake, real))

    train_adversarial(
        list(mapping.parameters()), critic, batches, step, config, desc="kin", verbose=verbose
    )
    return mapping.kin().cpu().numpy()
