"""ACE: explain groups of cells with small, signed gene panels (docs/method.md §8.3).

For each cell ``x`` of a group ``s`` (a seeded sample of at most ``max_cells``), a batched
proximal gradient (FISTA) solver minimises

    ||delta||_1 + lam * max(0, alpha + m_s(x + delta) - max_{t != s} m_t(x + delta))

(one-vs-rest; one-vs-one replaces the max by a fixed target group ``t``), where
``m = head(embedding(x))`` are group logits (:mod:`acsleuth.nn.neural_kmeans`). The
soft-thresholding step of the L1 term gives exact zeros. Gene ``g``'s score for ``s`` is the
mean ``|delta_g|`` over the cells; its direction is the sign of ``-mean(delta_g)``: ``delta``
moves a cell *out of* ``s``, so a gene enriched in ``s`` has a negative mean ``delta``.
One-vs-rest panels are by default fused with the same cells' panel against the group's
complement (:func:`complement_model`): the max over ``t != s`` explains a group against its
nearest group, the complement against all other cells at once, and the first genes of a
panel need both (benchmarks/RESULTS.md, ACE).

The default embedding is :func:`whitened_embedding`: squared distances in it are Mahalanobis
distances under the genes' covariance with its eigenvalues floored at a typical gene's
variance. In plain principal components a gene that sums several others (and so has more
variance) carries the largest loadings, and the L1-cheapest way out of a group goes through
it; whitening the directions of high variance moves the gradient to the genes the others
depend on, and the floor keeps rarely expressed genes (low variance) from being amplified
(benchmarks/RESULTS.md, ACE).

``lam`` and the step size are made free of the data's scale: ``lam`` is divided by the
median, over the group's cells, of ``||grad margin(x)||_inf`` (``lam > 1`` makes a typical
cell worth flipping), and each cell's step is set so that its strongest gene covers the
linearised distance to the margin in about ``steps_to_cross`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.neural_kmeans import NeuralKMeans, StudentTHead

Mode = Literal["one_vs_rest", "one_vs_one"]
Embedding = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ExplainConfig:
    """ACE settings (chosen on the simulation and pbmc68k_reduced, benchmarks/RESULTS.md).

    ``beta`` is the k-means fuzziness in units of the inverse mean squared distance of a cell
    to its own centroid; ``lam`` the hinge weight in units of the group's median gradient
    (see the module docstring); ``alpha`` the margin (the seed's 1.0). The solver runs at most
    ``max_iter`` FISTA steps and stops once no cell's best objective improved by more than
    ``tol`` (relative) in ``patience`` steps. ``max_cells`` bounds the cells explained per
    group (a sample seeded by ``seed``); ``n_components`` is the number of principal
    components of the ``"pca"`` embedding, of the z-scored genes with ``standardize``;
    ``whiten_floor`` the quantile of the per-gene variances at which the ``"whitened"``
    embedding floors its eigenvalues (:func:`whitened_embedding`). ``panel="fused"`` (one-vs-rest
    only) orders the genes by the reciprocal-rank fusion, with constant ``fusion_k``, of the
    panel against each cell's nearest other group and the panel against the group's
    complement (:attr:`GroupExplanation.order`); ``"nearest"`` keeps the first alone.
    """

    beta: float = 1.0
    lam: float = 4.0
    alpha: float = 1.0
    max_iter: int = 300
    patience: int = 20
    tol: float = 1e-3
    steps_to_cross: float = 20.0
    max_cells: int = 200
    n_components: int = 30
    standardize: bool = False
    whiten_floor: float = 0.9
    panel: Literal["fused", "nearest"] = "fused"
    fusion_k: float = 10.0
    seed: int = 0


@dataclass
class GroupExplanation:
    """ACE's answer for one group over ``G`` genes.

    ``score (G,)`` mean ``|delta|``, ``mean_delta (G,)``, ``saliency (G,)`` mean
    ``|grad margin|`` at the cells (it orders genes of equal score), ``flipped`` the fraction
    of cells whose ``argmax m`` left the group, ``l1`` the mean ``||delta||_1``, ``n_cells``
    explained and ``n_iter`` solver steps run; ``mean_grad (G,)`` the signed mean gradient.
    ``pooled_order`` and ``pooled_sign`` are the complement panel's order and
    :meth:`signs`, when fused.
    """

    score: np.ndarray
    mean_delta: np.ndarray
    saliency: np.ndarray
    flipped: float
    l1: float
    n_cells: int
    n_iter: int
    history: list[float] = field(default_factory=list)
    mean_grad: np.ndarray | None = None
    pooled_order: np.ndarray | None = None
    pooled_sign: np.ndarray | None = None
    fusion_k: float = ExplainConfig.fusion_k

    @property
    def nearest_order(self) -> np.ndarray:
        """Gene indices, best first: by score, ties by saliency."""
        return np.lexsort((-self.saliency, -self.score))

    @property
    def ranking_score(self) -> np.ndarray:
        """``(G,)`` what :attr:`order` sorts: ``score``, or with a complement panel
        ``1 / (fusion_k + rank) + 1 / (fusion_k + pooled rank)`` (ranks from 1)."""
        if self.pooled_order is None:
            return self.score
        rank, pooled = np.empty(len(self.score)), np.empty(len(self.score))
        rank[self.nearest_order] = np.arange(1, len(rank) + 1)
        pooled[self.pooled_order] = np.arange(1, len(pooled) + 1)
        return 1.0 / (self.fusion_k + rank) + 1.0 / (self.fusion_k + pooled)

    @property
    def order(self) -> np.ndarray:
        """Gene indices, best first: :attr:`nearest_order`, or by the fused score with a
        complement panel (ties by the nearest-group rank)."""
        if self.pooled_order is None:
            return self.nearest_order
        rank = np.empty(len(self.score))
        rank[self.nearest_order] = np.arange(len(rank))
        return np.lexsort((rank, -self.ranking_score))

    def signs(self) -> np.ndarray:
        """``(G,)`` ``-sign(mean_delta)``; where no cell moved the gene, the sign of the mean
        gradient (higher expression keeps a cell in the group: enriched), else 0."""
        grad = np.zeros(len(self.score)) if self.mean_grad is None else np.sign(self.mean_grad)
        return np.where(self.mean_delta != 0, -np.sign(self.mean_delta), grad)

    @property
    def direction(self) -> np.ndarray:
        """``(G,)`` +1 where the gene is enriched in the group, -1 where depleted: the sign of
        :meth:`signs`, where it is 0 the complement panel's (``pooled_sign``), else +1."""
        sign = self.signs()
        if self.pooled_sign is not None:
            sign = np.where(self.mean_delta != 0, sign, self.pooled_sign)
        return np.where(sign == 0, 1.0, sign).astype(np.int8)


class LinearEmbedding(nn.Module):
    """``z = (x - mean) @ components.T + offset``: PCA or any fitted linear map ``(d, G)``."""

    def __init__(
        self, mean: np.ndarray, components: np.ndarray, offset: np.ndarray | None = None
    ) -> None:
        super().__init__()
        components = np.asarray(components, dtype=np.float32)
        offset = np.zeros(len(components)) if offset is None else offset
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("components", torch.as_tensor(components))
        self.register_buffer("offset", torch.as_tensor(np.asarray(offset), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.components.T + self.offset


def pca_embedding(
    x: np.ndarray, n_components: int, *, standardize: bool = False, seed: int = 0
) -> LinearEmbedding:
    """The first ``min(n_components, N - 1, G)`` principal components of ``x (N, G)``.

    ``standardize``: of the z-scored genes (a constant gene gets scale 1); the map still
    takes ``x`` in its own units."""
    from sklearn.decomposition import PCA

    n = max(1, min(n_components, x.shape[0] - 1, x.shape[1]))
    scale = x.std(0) if standardize else np.ones(x.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    pca = PCA(n, random_state=seed).fit(x / scale)
    return LinearEmbedding(pca.mean_ * scale, pca.components_ / scale)


def whitened_embedding(x: np.ndarray, floor_quantile: float = 0.9) -> LinearEmbedding:
    """Every principal component of ``x (N, G)``, divided by ``sqrt(max(variance, tau))``.

    ``tau`` is the ``floor_quantile`` quantile of the per-gene variances. Squared distances
    are Mahalanobis distances under the covariance whose eigenvalues are floored at ``tau``:
    directions of more variance than ``tau`` are whitened, the others keep the scale
    ``1 / sqrt(tau)`` (those outside the span of the centred cells play no part in distances
    between cells or centroids and are left out).
    """
    if not 0.0 <= floor_quantile <= 1.0:
        raise ValueError(f"explain: whiten_floor must be in [0, 1], got {floor_quantile}")
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(0)
    centred = x64 - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(len(x64) - 1, 1)
    tau = float(np.quantile(centred.var(0, ddof=1) if len(x64) > 1 else [0.0], floor_quantile))
    if not tau > 0:
        raise ValueError(
            "explain: the whitened embedding needs genes that vary; the expression is constant "
            "in more than a whiten_floor fraction of its genes (raise whiten_floor or drop them)"
        )
    return LinearEmbedding(mean, vt / np.sqrt(np.maximum(variance, tau))[:, None])


def fitted_embedding(x: np.ndarray, z: np.ndarray) -> tuple[LinearEmbedding, float]:
    """The least-squares linear map ``x (N, G) -> z (N, d)`` (minimum norm) and its R^2.

    It reproduces PCA (and any linear embedding of ``x``) exactly."""
    mean = x.mean(0)
    coef, *_ = np.linalg.lstsq(x - mean, z - z.mean(0), rcond=None)
    fit = (x - mean) @ coef
    resid = ((z - z.mean(0) - fit) ** 2).sum()
    r2 = 1.0 - resid / max(((z - z.mean(0)) ** 2).sum(), 1e-12)
    return LinearEmbedding(mean, coef.T, z.mean(0)), float(r2)


def group_centroids(z: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """``(K, d)`` mean embedding of each group (ACE's centroids for given labels)."""
    return np.stack([z[codes == k].mean(0) for k in range(n_groups)]).astype(np.float32)


def kmeans_head(
    z: np.ndarray, codes: np.ndarray, centroids: np.ndarray, beta: float
) -> NeuralKMeans:
    """:class:`NeuralKMeans` whose ``beta`` is ``beta`` over the mean squared distance of a
    cell to its own centroid."""
    spread = float(((z - centroids[codes]) ** 2).sum(1).mean())
    return NeuralKMeans(torch.as_tensor(centroids), beta / max(spread, 1e-12))


def complement_model(
    embedding: Embedding, z: np.ndarray, codes: np.ndarray, group: int, beta: float
) -> nn.Module:
    """The neuralised k-means of ``group`` (logit 1) against all other cells (logit 0).

    ``z (N, d)`` are the embedded cells with ``codes (N,)``; centroids are the two mean
    embeddings and ``beta`` is in the unit of :func:`kmeans_head`."""
    two = (codes == group).astype(np.int64)
    return cluster_model(embedding, kmeans_head(z, two, group_centroids(z, two, 2), beta))


def margin(logits: Tensor, source: int, target: int | None) -> Tensor:
    """``m_s - m_t`` (one-vs-one, ``target`` given) or ``m_s - max_{t != s} m_t``."""
    if target is not None:
        return logits[:, source] - logits[:, target]
    others = logits.clone()
    others[:, source] = float("-inf")
    return logits[:, source] - others.max(1).values


def _margin_and_grad(
    model: nn.Module, x: Tensor, source: int, target: int | None
) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    value = margin(model(x), source, target)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _soft(v: Tensor, threshold: Tensor) -> Tensor:
    return v.sign() * (v.abs() - threshold).clamp_min(0.0)


def solve(
    model: nn.Module,
    x: Tensor,
    source: int,
    target: int | None = None,
    *,
    config: ExplainConfig = ExplainConfig(),
) -> tuple[Tensor, int, list[float]]:
    """The perturbations ``delta (n, G)`` of the cells ``x (n, G)`` of group ``source``.

    ``model`` maps ``(n, G)`` expression to ``(n, K)`` group logits. Returns the best
    ``delta`` (lowest objective) seen for each cell, the number of steps run and the mean
    objective per step.
    """
    m0, g0 = _margin_and_grad(model, x, source, target)
    gmax = g0.abs().amax(1)
    lam = config.lam / gmax.median().clamp_min(1e-12)
    hinge0 = (config.alpha + m0).clamp_min(0.0)
    distance = hinge0 / gmax.clamp_min(1e-12)  # linearised L1 distance to the margin
    step = (distance / (config.steps_to_cross * lam * gmax).clamp_min(1e-12))[:, None]
    delta = torch.zeros_like(x)
    previous = delta
    best, best_obj = delta.clone(), lam * hinge0
    momentum, since, history = 1.0, torch.zeros(len(x), dtype=torch.long), []
    n_iter = 0
    while n_iter < config.max_iter:
        n_iter += 1
        next_momentum = (1.0 + (1.0 + 4.0 * momentum**2) ** 0.5) / 2.0
        y = delta + ((momentum - 1.0) / next_momentum) * (delta - previous)
        m, g = _margin_and_grad(model, x + y, source, target)
        active = (config.alpha + m > 0).float()[:, None]
        previous, delta = delta, _soft(y - step * lam * active * g, step)
        momentum = next_momentum
        with torch.no_grad():
            obj = delta.abs().sum(1) + lam * (
                config.alpha + margin(model(x + delta), source, target)
            ).clamp_min(0.0)
        better = obj < best_obj * (1.0 - config.tol) - 1e-12
        best[better], best_obj = delta[better], torch.where(better, obj, best_obj)
        since = torch.where(better, 0, since + 1)
        history.append(float(obj.mean()))
        if bool((since >= config.patience).all()):
            break
    return best, n_iter, history


def explain_group(
    model: nn.Module,
    x: Tensor,
    source: int,
    target: int | None = None,
    *,
    config: ExplainConfig = ExplainConfig(),
) -> GroupExplanation:
    """Solve for the cells ``x (n, G)`` of ``source`` and summarise per gene."""
    delta, n_iter, history = solve(model, x, source, target, config=config)
    _, grad = _margin_and_grad(model, x, source, target)
    with torch.no_grad():
        flipped = model(x + delta).argmax(1) != source
    return GroupExplanation(
        score=delta.abs().mean(0).numpy().astype(np.float64),
        mean_delta=delta.mean(0).numpy().astype(np.float64),
        saliency=grad.abs().mean(0).numpy().astype(np.float64),
        mean_grad=grad.mean(0).numpy().astype(np.float64),
        flipped=float(flipped.float().mean()),
        l1=float(delta.abs().sum(1).mean()),
        n_cells=len(x),
        n_iter=n_iter,
        history=history,
    )


def sample_rows(rows: np.ndarray, max_cells: int, seed: int) -> np.ndarray:
    """At most ``max_cells`` of ``rows``, a sample seeded by ``seed``, in their order."""
    if len(rows) <= max_cells:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))


def explain(
    x: np.ndarray,
    codes: np.ndarray,
    model: nn.Module,
    *,
    groups: list[int] | None = None,
    mode: Mode = "one_vs_rest",
    reference: int | None = None,
    config: ExplainConfig = ExplainConfig(),
    complement: Callable[[int], nn.Module] | None = None,
) -> dict[int, GroupExplanation]:
    """ACE for each group code in ``groups`` (default: all present) of cells ``x (N, G)``.

    ``codes (N,)`` are group codes ``0..K-1`` matching the logits of ``model``; with
    ``mode="one_vs_one"`` every group is moved towards ``reference``. ``complement(k)``
    (e.g. :func:`complement_model`) gives group ``k``'s two-group model; with
    ``config.panel="fused"`` and one-vs-rest the same cells are explained in it too and the
    two panels fused (:attr:`GroupExplanation.order`).
    """
    if mode not in ("one_vs_rest", "one_vs_one"):
        raise ValueError(f"explain: mode must be 'one_vs_rest' or 'one_vs_one', got {mode!r}")
    if mode == "one_vs_one" and reference is None:
        raise ValueError("explain: mode='one_vs_one' needs the reference group to move cells to")
    groups = sorted(set(codes.tolist())) if groups is None else groups
    out = {}
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for k in groups:
            if mode == "one_vs_one" and k == reference:
                continue
            rows = sample_rows(np.flatnonzero(codes == k), config.max_cells, config.seed + k)
            cells = torch.as_tensor(x[rows], dtype=torch.float32)
            target = reference if mode == "one_vs_one" else None
            out[k] = explain_group(model, cells, k, target, config=config)
            if complement is not None and config.panel == "fused" and target is None:
                pooled = explain_group(complement(k), cells, 1, None, config=config)
                out[k].pooled_order, out[k].fusion_k = pooled.nearest_order, config.fusion_k
                out[k].pooled_sign = pooled.signs()
    return out


def saliency(x: np.ndarray, codes: np.ndarray, model: nn.Module, group: int) -> np.ndarray:
    """Gradient saliency baseline: mean ``|grad (m_s - max_{t != s} m_t)|`` over the group."""
    _, grad = _margin_and_grad(
        model, torch.as_tensor(x[codes == group], dtype=torch.float32), group, None
    )
    return grad.abs().mean(0).numpy()


def cluster_model(embedding: Embedding, head: nn.Module) -> nn.Module:
    """``x -> head(embedding(x))`` as one module (``embedding`` may be any callable)."""
    return _Composed(embedding, head)


class _Composed(nn.Module):
    def __init__(self, embedding: Embedding, head: nn.Module) -> None:
        super().__init__()
        self.embedding, self.head = embedding, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embedding(x))


__all__ = [
    "ExplainConfig",
    "GroupExplanation",
    "LinearEmbedding",
    "NeuralKMeans",
    "StudentTHead",
    "cluster_model",
    "complement_model",
    "explain",
    "explain_group",
    "fitted_embedding",
    "group_centroids",
    "kmeans_head",
    "margin",
    "pca_embedding",
    "saliency",
    "sample_rows",
    "solve",
    "whitened_embedding",
]
