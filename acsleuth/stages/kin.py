"""Stage II: match every target normal cell to its "kin" reference cell (docs/method.md §2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import parallel
from .._constants import RECONSTRUCTION_WEIGHT, Kin, Metric, Params
from ..data import ExpressionSource
from ..nn import Critic, Generator
from ..ops import kin_topk
from ..ops.kin_topk import MAX_K
from ..train import AdversarialConfig, AdversarialStep, train_adversarial
from .score import embed


@dataclass(frozen=True)
class KinConfig(AdversarialConfig):
    """Settings of the learned mapping ``Z_T_hat = ReLU(M) Z_R`` (docs/method.md §2).

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
    reconstruction_weight: float = RECONSTRUCTION_WEIGHT
    init_weight: float = 0.5


def _check_embeddings(target_emb: Tensor, reference_emb: Tensor) -> None:
    if target_emb.ndim != 2 or reference_emb.ndim != 2:
        raise ValueError(
            f"kin: embeddings must be (cells, p) matrices, got target {tuple(target_emb.shape)} "
            f"and reference {tuple(reference_emb.shape)}"
        )
    if reference_emb.shape[0] == 0:
        raise ValueError("kin: the reference has no cell to match target cells to")


def nearest_kin(
    target_emb: Tensor, reference_emb: Tensor, *, metric: Metric = "cosine"
) -> np.ndarray:
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
    """Kin from the paper's adversarially trained non-negative mapping (docs/method.md §2).

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


# ------------------------------------------------------------------ sharded search


def _merge_topk(values: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` per row by descending value, equal values by ascending index."""
    order = torch.argsort(indices, dim=1, stable=True)
    values, indices = values.gather(1, order), indices.gather(1, order)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    indices = indices.gather(1, order)
    return values[:, :k].contiguous(), indices[:, :k].contiguous()


def sharded_kin_topk(
    query: Tensor,
    keys_shard: Tensor,
    *,
    key_offset: int,
    k: int = 1,
    metric: Metric = "cosine",
    ctx: parallel.Context,
    allow_tf32: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`acsleuth.ops.kin_topk` over reference rows sharded across ranks.

    Each rank searches its own block of keys, then the ranks all-gather their candidates and
    merge them, so every rank returns what ``kin_topk`` on the full key set returns: values
    sorted descending, equal values ordered by ascending global key index.

    Parameters
    ----------
    query
        ``(N_q, d)`` queries, identical on every rank.
    keys_shard
        ``(n_rank, d)`` this rank's keys, global rows ``key_offset .. key_offset + n_rank``
        (the block of :func:`acsleuth.parallel.shard_bounds`); ``n_rank`` may be 0 or smaller than ``k``.
    key_offset
        Global index of this rank's first key.
    k
        Neighbours per query, ``1 <= k <= min(64, total keys)``.
    metric, allow_tf32
        As in :func:`~acsleuth.ops.kin_topk`.
    ctx
        The run's context; single process: ``kin_topk(query, keys_shard)`` with
        ``key_offset`` added to the indices.

    Returns
    -------
    values, indices
        ``(N_q, k)`` similarities and their ``int64`` global key indices, on every rank.
    """
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"sharded_kin_topk: k must be an integer in [1, {MAX_K}], got {k!r}")
    if keys_shard.dim() != 2 or query.dim() != 2 or keys_shard.shape[1] != query.shape[1]:
        raise ValueError(
            f"sharded_kin_topk: query {tuple(query.shape)} and keys_shard "
            f"{tuple(keys_shard.shape)} must be (N, d) matrices with the same d"
        )
    if not ctx.distributed:
        values, indices = kin_topk(query, keys_shard, k=k, metric=metric, allow_tf32=allow_tf32)
        return values, (indices + key_offset if key_offset else indices)
    n_keys = int(
        parallel.all_reduce_sum(torch.tensor([keys_shard.shape[0]], device=query.device), ctx)
    )
    if k > n_keys:
        raise ValueError(f"sharded_kin_topk: k = {k} but there are only {n_keys} keys; lower k")
    n_query = query.shape[0]
    # Padding (-inf, max index) sorts after every real candidate, even one of value -inf.
    values = torch.full((n_query, k), -torch.inf, dtype=query.dtype, device=query.device)
    indices = torch.full(
        (n_query, k), torch.iinfo(torch.long).max, dtype=torch.long, device=query.device
    )
    local_k = min(k, keys_shard.shape[0])
    if local_k > 0:
        v, i = kin_topk(query, keys_shard, k=local_k, metric=metric, allow_tf32=allow_tf32)
        values[:, :local_k] = v
        indices[:, :local_k] = i + key_offset
    if n_query == 0:
        return values, indices

    def side_by_side(t: Tensor) -> Tensor:  # (world * N_q, k) -> (N_q, world * k)
        gathered = parallel.all_gather_equal(t, ctx).view(ctx.world_size, n_query, k)
        return gathered.permute(1, 0, 2).reshape(n_query, ctx.world_size * k)

    return _merge_topk(side_by_side(values), side_by_side(indices), k)


# ------------------------------------------------------------------ module II in a model
def find_kin(
    generator: Generator,
    target: ExpressionSource,
    reference: ExpressionSource,
    rows: np.ndarray,
    kin: Kin,
    params: Params,
    device: torch.device,
) -> np.ndarray:
    """Reference kin rows of target ``rows`` (module II) from module I's encoder embeddings.

    In a distributed run ``rows`` are this rank's normal cells; every rank embeds its
    shard of reference cells and the nearest kin come from a top-k search sharded by
    reference rows, merged over ranks (:func:`sharded_kin_topk`).
    """
    ctx = parallel.context()
    z_target = embed(generator, target, rows, params, device)
    if not ctx.distributed:
        z_reference = embed(generator, reference, None, params, device)
        if kin == "nearest":
            return nearest_kin(z_target, z_reference)
        return learned_kin(
            z_target,
            z_reference,
            config=params.kin_config(),
            seed=params.random_state,
            verbose=params.verbose,
        )
    first, last = parallel.shard_bounds(reference.n_obs, ctx)
    z_reference = embed(generator, reference, np.arange(first, last), params, device)
    queries = parallel.all_gather_rows(z_target, ctx)
    offset = parallel.row_offset(len(rows), ctx)
    if kin == "nearest":
        _, index = sharded_kin_topk(queries, z_reference, key_offset=first, k=1, ctx=ctx)
        every = index[:, 0].cpu().numpy()
    else:  # the learned mapping trains on all embeddings, identically on every rank
        every = learned_kin(
            queries,
            parallel.all_gather_rows(z_reference, ctx),
            config=params.kin_config(),
            seed=params.random_state,
            verbose=params.verbose and ctx.is_main,
        )
    return every[offset : offset + len(rows)]
