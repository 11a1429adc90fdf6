"""Stage IV: subtype the anomalies with DESC (docs/method.md §4).

DESC clusters an embedding of the anomalies: their principal components
(``embedding="pca"``), or the fused embedding of docs/method.md §4 (``embedding="fusion"``). For the
latter, each anomaly gives two tokens, ``z = E(x)`` of its corrected expression and ``zeta = E(r)`` of
its module-I residual ``r = x - x_hat``; a small transformer fuses them into ``z*``. DESC then
clusters ``z*`` while fine-tuning the fusion encoder: centroids start from k-means, the loss
is ``KL(P || Q)`` between a sharpened target ``P`` (refreshed once per epoch) and the Student-t
soft assignment ``Q``, and training stops once fewer than ``tol`` of the hard assignments
change in an epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from torch import Tensor, nn

from .. import parallel
from .._constants import EVAL_BATCH_SIZE, LEARNING_RATE, Params, SubtypeEmbedding
from .._logging import logger, progress, stage_timer
from .._seed import seeded
from .fusion import FusionEncoder, residuals


@dataclass(frozen=True)
class SubtypeConfig:
    """Stage IV settings (docs/method.md §4 defaults).

    ``dof`` is the Student-t degrees of freedom ``nu``; ``tol`` the fraction of hard
    assignments whose change stops DESC; ``n_init`` the k-means restarts of the centroid
    initialisation and of each candidate ``k`` of ``"auto"``. ``max_subtypes`` bounds the
    ``"auto"`` search (``k`` in ``2..max_subtypes``), whose silhouettes are computed on at
    most ``silhouette_cells`` cells (a seeded sample) to keep them ``O(N)``; the smallest
    ``k`` within ``silhouette_tolerance`` of the best silhouette is taken.
    ``embedding`` picks what DESC clusters: ``"fusion"`` (docs/method.md §4,
    the fusion encoder is fine-tuned) or ``"pca"``, the first ``n_components`` principal
    components of the anomalies' expression (only the centroids are trained); ``"pca"`` is
    the default because it scored the higher F1 x NMI (benchmarks/RESULTS.md, issue 4). 50
    components rather than 30: the silhouette of ``"auto"`` then found the number of
    held-out PBMC types about three times as often, at the same NMI with the number given
    (benchmarks/RESULTS.md, issue 16).
    """

    embedding: SubtypeEmbedding = "pca"
    n_components: int = 50
    epochs: int = 100
    batch_size: int = 64
    lr: float = LEARNING_RATE
    weight_decay: float = 1e-4
    dof: float = 1.0
    tol: float = 1e-3
    n_init: int = 20
    n_layers: int = 3
    n_heads: int = 4
    feedforward: int = 512
    dropout: float = 0.1
    max_subtypes: int = 10
    silhouette_cells: int = 5000
    silhouette_tolerance: float = 0.01
    eval_batch_size: int = EVAL_BATCH_SIZE


@dataclass
class DescResult:
    """DESC's output for ``N`` cells and ``K`` clusters.

    ``labels (N,)`` int64 (cluster 0 is the largest), ``centroids (K, d)`` and ``embedding
    (N, d)`` float32 after the last epoch (eval mode), and per epoch the mean KL ``loss`` and
    the fraction of hard assignments ``changed``.
    """

    labels: np.ndarray
    centroids: np.ndarray
    embedding: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def n_epochs(self) -> int:
        return len(self.history)


@dataclass
class SubtypeResult:
    """Stage IV's output for ``N`` anomalies.

    ``labels (N,)`` int64 subtypes (0 is the largest), ``embedding (N, p)`` float32 fused
    embeddings ``z*``, the number of subtypes, the ``"auto"`` curve ``{k: silhouette}``
    (``None`` when the number was given), the ``centroids (n_subtypes, p)`` in the space of
    ``embedding`` and DESC's per-epoch ``history``.
    """

    labels: np.ndarray
    embedding: np.ndarray
    n_subtypes: int
    silhouette_curve: dict[int, float] | None
    centroids: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)

    def soft_assignment(self, dof: float = 1.0) -> np.ndarray:
        """``(N, n_subtypes)`` Student-t soft assignments ``q`` of the cells to the centroids."""
        q = soft_assignment(torch.from_numpy(self.embedding), torch.from_numpy(self.centroids), dof)
        return q.numpy()


def student_t_logits(z: Tensor, centroids: Tensor, dof: float = 1.0) -> Tensor:
    """``(N, K)`` logs of the Student-t kernel ``(1 + ||z_i - mu_j||^2 / nu)^-(nu+1)/2``.

    Their row-wise softmax is the soft assignment ``Q``.
    """
    sq = (
        z.pow(2).sum(1, keepdim=True) - 2.0 * z @ centroids.T + centroids.pow(2).sum(1)
    ).clamp_min(0.0)
    return -0.5 * (dof + 1.0) * torch.log1p(sq / dof)


def soft_assignment(z: Tensor, centroids: Tensor, dof: float = 1.0) -> Tensor:
    """``Q (N, K)``: ``q_ij`` proportional to ``(1 + ||z_i - mu_j||^2 / nu)^-(nu+1)/2``."""
    return student_t_logits(z, centroids, dof).softmax(dim=1)


def target_distribution(q: Tensor, column_sums: Tensor | None = None) -> Tensor:
    """``P (N, K)``: ``p_ij`` proportional to ``q_ij^2 / sum_i q_ij``; rows sum to 1.

    ``column_sums`` replaces ``q.sum(0)`` when ``q`` is one shard of the cells (the
    all-reduced sums of a distributed run)."""
    weight = q.pow(2) / (q.sum(0) if column_sums is None else column_sums)
    return weight / weight.sum(1, keepdim=True)


@torch.no_grad()
def embed(
    model: nn.Module,
    inputs: Sequence[Tensor],
    *,
    device: torch.device,
    batch_size: int = EVAL_BATCH_SIZE,
) -> Tensor:
    """``model(*rows)`` of every row of ``inputs`` (each ``(N, ...)``), in eval mode: ``(N, d)``."""
    model.eval()
    n = inputs[0].shape[0]
    return torch.cat(
        [
            model(*(t[start : start + batch_size].to(device, torch.float32) for t in inputs))
            for start in range(0, n, batch_size)
        ]
    )


def _by_size(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """The cluster order that makes cluster 0 the largest (ties: lower index first)."""
    return np.argsort(-np.bincount(labels, minlength=n_clusters), kind="stable")


def kmeans(z: np.ndarray, n_clusters: int, *, n_init: int = 20, seed: int = 0) -> KMeans:
    """sklearn k-means on ``z (N, d)``."""
    return KMeans(n_clusters, n_init=n_init, random_state=seed).fit(z)


def desc(
    model: nn.Module,
    inputs: Sequence[Tensor],
    n_clusters: int,
    *,
    config: SubtypeConfig = SubtypeConfig(),
    device: str | torch.device | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> DescResult:
    """DESC: cluster ``model(*inputs)`` while training ``model`` and the centroids.

    Parameters
    ----------
    model
        Maps minibatch rows of ``inputs`` to embeddings ``(B, d)``; all its parameters that
        require gradients are trained (none for ``nn.Identity()``: only the centroids move).
    inputs
        Tensors ``(N, ...)`` whose rows are the cells; minibatches are moved to ``device``
        (default: that of ``inputs[0]``) as float32.
    n_clusters
        ``K``, in ``1..N``.
    seed
        Seeds k-means, the minibatch order and dropout; the result is a function of it on CPU.

    Returns
    -------
    DescResult
        Its ``history`` has one entry per epoch run: at most ``config.epochs``, fewer when
        fewer than ``config.tol`` of the hard assignments changed in the last one.
    """
    n = inputs[0].shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"desc: n_clusters must be in 1..{n} (cells given), got {n_clusters}")
    device = inputs[0].device if device is None else torch.device(device)
    model.to(device)
    ctx = parallel.context()  # distributed: every rank holds all inputs and trains on its shard
    first, last = parallel.shard_bounds(n, ctx)
    mine = [t[first:last] for t in inputs]
    with seeded(seed, device):
        parallel.broadcast_module(model, ctx)
        z = embed(model, mine, device=device, batch_size=config.eval_batch_size)
        everyone = parallel.all_gather_rows(z, ctx)  # k-means on all cells, alike on every rank
        init = kmeans(everyone.cpu().numpy(), n_clusters, n_init=config.n_init, seed=seed)
        centroids = nn.Parameter(torch.as_tensor(init.cluster_centers_, device=device))
        params = [p for p in model.parameters() if p.requires_grad] + [centroids]
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        order = torch.Generator().manual_seed(seed + ctx.rank)
        q = soft_assignment(z, centroids.detach(), config.dof)
        labels = q.argmax(1)
        history = []
        for _ in progress(range(config.epochs), desc="desc", verbose=verbose and ctx.is_main):
            p = target_distribution(q, column_sums=parallel.all_reduce_sum(q.sum(0), ctx))
            model.train()
            total = torch.zeros((), device=device)
            batches = torch.randperm(last - first, generator=order).split(
                max(1, config.batch_size // ctx.world_size)
            )
            for rows in parallel.lockstep(batches, ctx):
                batch = (t[rows.to(t.device)].to(device, torch.float32) for t in mine)
                log_q = student_t_logits(model(*batch), centroids, config.dof).log_softmax(1)
                loss = F.kl_div(log_q, p[rows.to(device)], reduction="batchmean")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                parallel.average_gradients(params, ctx)  # centroids and model stay alike
                opt.step()
                total += loss.detach() * len(rows)
            z = embed(model, mine, device=device, batch_size=config.eval_batch_size)
            q = soft_assignment(z, centroids.detach(), config.dof)
            moved = parallel.all_reduce_sum((q.argmax(1) != labels).float().sum(), ctx)
            changed = (moved / n).item()
            labels = q.argmax(1)
            history.append(
                {"loss": parallel.all_reduce_sum(total, ctx).item() / n, "changed": changed}
            )
            if changed < config.tol:
                break
    labels = parallel.all_gather_rows(labels, ctx).cpu().numpy()
    z = parallel.all_gather_rows(z, ctx)
    order_by_size = _by_size(labels, n_clusters)
    return DescResult(
        labels=np.argsort(order_by_size)[labels].astype(np.int64),
        centroids=centroids.detach()[torch.as_tensor(order_by_size)].cpu().numpy(),
        embedding=z.cpu().numpy().astype(np.float32),
        history=history,
    )


def desc_cluster(
    z: Tensor,
    n_clusters: int,
    *,
    config: SubtypeConfig = SubtypeConfig(),
    seed: int = 0,
    verbose: bool = True,
) -> DescResult:
    """DESC on fixed embeddings ``z (N, d)``: only the centroids are trained."""
    return desc(nn.Identity(), (z,), n_clusters, config=config, seed=seed, verbose=verbose)


def choose_n_subtypes(
    z: np.ndarray,
    k_range: Sequence[int] = range(2, 11),
    *,
    n_init: int = 20,
    max_cells: int = 5000,
    seed: int = 0,
    tolerance: float = 0.0,
) -> tuple[int, dict[int, float]]:
    """The smallest ``k`` of ``k_range`` whose k-means on ``z (N, d)`` has a silhouette within
    ``tolerance`` of the highest.

    A tolerance of 0.01 (``SubtypeConfig``): on 50 PCs of the held-out types of 8 development
    scenarios x 3 seeds plus 15 % normal cells (calls are never clean), the highest
    silhouette split types 12 times in 24 (right K 0.50, NMI 0.708); within 0.01 of it,
    the smallest k was right 0.625 of the time (NMI 0.744); 0.02 / 0.03 gave 0.625 / 0.542
    (benchmarks/RESULTS.md, issue 16). On the calls of 36 development pipeline runs (2 to 5
    unseen types, one and two batches) it scored a higher NMI than the highest silhouette,
    Calinski-Harabasz, Davies-Bouldin, the gap statistic, subsample stability and fewer PCs,
    and than k-means told the true number (0.818 against 0.809).

    Only ``2 <= k < N`` are tried (silhouette needs it); with fewer than 3 cells, or when no
    clustering has a finite silhouette (e.g. identical cells), the answer is 1 with an empty
    curve. Silhouettes use a seeded sample of ``max_cells`` cells when ``N`` is larger.

    Returns
    -------
    k, curve
        The chosen ``k`` and ``{k: silhouette}`` of every ``k`` tried.
    """
    n = len(z)
    sample = max_cells if n > max_cells else None
    curve = {}
    for k in (k for k in k_range if 2 <= k < n):
        labels = kmeans(z, k, n_init=n_init, seed=seed).labels_
        if len(np.unique(labels)) < 2:
            continue
        curve[k] = float(silhouette_score(z, labels, sample_size=sample, random_state=seed))
    finite = {k: s for k, s in curve.items() if np.isfinite(s)}
    if not finite:
        return 1, curve
    best = max(finite.values())
    return min(k for k, s in finite.items() if s >= best - tolerance), curve


def principal_components(x: Tensor, n_components: int, *, seed: int = 0) -> np.ndarray:
    """The first ``min(n_components, N, G)`` principal components of ``x (N, G)``, float32."""
    from sklearn.decomposition import PCA

    values = x.detach().cpu().numpy().astype(np.float32, copy=False)
    n = min(n_components, *values.shape)
    if values.shape[0] < 2:  # one cell: no variance (sklearn would divide 0 by 0)
        return np.zeros((values.shape[0], n), dtype=np.float32)
    return PCA(n, random_state=seed).fit_transform(values).astype(np.float32)


def check_n_subtypes(n_subtypes: object) -> int | Literal["auto"]:
    """``n_subtypes`` as ``"auto"`` or a positive ``int`` (a string of digits is accepted, as
    the command line gives it); anything else is a ``ValueError`` saying what to pass."""
    if isinstance(n_subtypes, str) and n_subtypes.strip().isdigit():
        n_subtypes = int(n_subtypes)
    if n_subtypes == "auto":
        return "auto"
    is_int = isinstance(n_subtypes, (int, np.integer)) and not isinstance(n_subtypes, bool)
    if not is_int or n_subtypes < 1:
        raise ValueError(
            f"n_subtypes: {n_subtypes!r} is not a number of subtypes (pass a positive integer, "
            "e.g. 5, or 'auto' to choose it by silhouette)"
        )
    return int(n_subtypes)


def subtype_anomalies(
    x: Tensor,
    *,
    generator: nn.Module | None = None,
    n_subtypes: int | Literal["auto"] = "auto",
    config: SubtypeConfig = SubtypeConfig(),
    device: str | torch.device = "cpu",
    seed: int = 0,
    verbose: bool = True,
    timings: dict[str, float] | None = None,
) -> SubtypeResult:
    """Subtype anomalies from their expression ``x (N, G)`` (docs/method.md §4).

    Parameters
    ----------
    x
        Corrected expression of the anomalies, on any device; minibatches move to ``device``.
    generator
        Module I's generator ``x -> (x_hat, z)``, on ``device``; needed with
        ``config.embedding == "fusion"`` only: it gives the residuals, and a copy of its
        encoder is fine-tuned.
    n_subtypes
        An integer in ``1..N``, or ``"auto"``: the ``k`` in ``2..config.max_subtypes`` (and
        ``< N``) with the best silhouette of k-means on the initial embedding. Fewer than 3
        anomalies make a single subtype.
    seed
        Seeds the fusion encoder's weights, k-means, minibatch order and dropout.
    timings
        When given, seconds are added under ``"subtype embed"``, ``"subtype choose k"`` (``"auto"`` only) and
        ``"subtype desc"``.
    """
    timings = {} if timings is None else timings
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"subtype_anomalies: x must be (N >= 1, G), got shape {tuple(x.shape)}")
    n = x.shape[0]
    is_int = isinstance(n_subtypes, (int, np.integer)) and not isinstance(n_subtypes, bool)
    if n_subtypes != "auto" and not (is_int and 1 <= n_subtypes <= n):
        raise ValueError(
            f"subtype_anomalies: n_subtypes must be 'auto' or an integer in 1..{n} (the number "
            f"of anomalies), got {n_subtypes!r}"
        )
    device = torch.device(device)
    if config.embedding not in ("pca", "fusion"):
        raise ValueError(
            f"subtype_anomalies: embedding must be 'pca' or 'fusion', got {config.embedding!r}"
        )
    if config.embedding == "fusion" and generator is None:
        raise ValueError("subtype_anomalies: embedding='fusion' needs module I's generator")
    if config.embedding == "pca":
        with stage_timer(timings, "subtype embed"):
            z = principal_components(x, config.n_components, seed=seed)
        model, inputs = nn.Identity(), (torch.as_tensor(z, device=device),)
    else:
        with seeded(seed, device):
            model = FusionEncoder(
                generator.encoder,
                n_layers=config.n_layers,
                n_heads=config.n_heads,
                feedforward=config.feedforward,
                dropout=config.dropout,
            ).to(device)
        with stage_timer(timings, "subtype embed"):
            r = residuals(generator, x, device=device, batch_size=config.eval_batch_size)
            z = embed(model, (x, r), device=device, batch_size=config.eval_batch_size).cpu().numpy()
        inputs = (x, r)
    curve = None
    if n_subtypes == "auto":
        with stage_timer(timings, "subtype choose k"):
            n_subtypes, curve = choose_n_subtypes(
                z,
                range(2, config.max_subtypes + 1),
                n_init=config.n_init,
                max_cells=config.silhouette_cells,
                seed=seed,
                tolerance=config.silhouette_tolerance,
            )
    n_subtypes = int(parallel.broadcast_object(n_subtypes, parallel.context()))  # ranks agree
    if n_subtypes == 1:
        z = z.astype(np.float32)
        return SubtypeResult(np.zeros(n, dtype=np.int64), z, 1, curve, z.mean(0, keepdims=True))
    with stage_timer(timings, "subtype desc"):
        result = desc(
            model, inputs, n_subtypes, config=config, device=device, seed=seed, verbose=verbose
        )
    return SubtypeResult(
        result.labels, result.embedding, n_subtypes, curve, result.centroids, result.history
    )


def subtype_cells(
    x: np.ndarray,
    generator: nn.Module,
    params: Params,
    *,
    n_subtypes: int | Literal["auto"] = "auto",
    device: torch.device,
    timings: dict[str, float],
) -> SubtypeResult | None:
    """:func:`subtype_anomalies` of the anomalies ``x (N, G)`` as a model runs it, with the
    settings of ``params``.

    None (logged) when ``N == 0``; one subtype when ``N < 3``. A number of subtypes above
    ``N`` is lowered to ``N`` with a warning (how many anomalies are called is known only
    now). Seconds go to ``timings["subtype"]`` (and its sub-stages).
    """
    n_subtypes = check_n_subtypes(n_subtypes)
    if len(x) == 0:
        logger.info("subtype: no anomaly was called; nothing to subtype")
        return None
    k = 1 if len(x) < 3 else n_subtypes
    if n_subtypes != "auto" and n_subtypes > len(x):
        k = min(k, len(x))
        warnings.warn(
            f"subtype: n_subtypes={n_subtypes} is more than the {len(x)} anomalies called; "
            f"making {k} subtype(s) instead (pass a smaller n_subtypes, or 'auto')",
            UserWarning,
            stacklevel=3,
        )
    with stage_timer(timings, "subtype"):
        return subtype_anomalies(
            torch.as_tensor(x),
            generator=generator,
            n_subtypes=k,
            config=params.subtype_config(),
            device=device,
            seed=params.random_state,
            verbose=params.verbose,
            timings=timings,
        )


__all__ = [
    "DescResult",
    "SubtypeConfig",
    "SubtypeResult",
    "check_n_subtypes",
    "choose_n_subtypes",
    "desc",
    "desc_cluster",
    "embed",
    "kmeans",
    "principal_components",
    "soft_assignment",
    "student_t_logits",
    "subtype_anomalies",
    "subtype_cells",
    "target_distribution",
]
