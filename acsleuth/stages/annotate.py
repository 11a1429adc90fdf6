"""Open-world annotation (scDET, docs/method.md §8.2): the computation behind ``OpenWorldAnnotator``.

Classes ``0 .. n_seen - 1`` are the reference's types (in the order given), classes
``n_seen .. K - 1`` are slots for novel types. The prior ``pi`` over the K classes comes from
k-means (K clusters) on the contrastive features of all cells, clusters matched to the seen
types by the Hungarian algorithm on the labelled cells and the remaining clusters assigned to
the novel slots by decreasing size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..data import MinibatchLoader
from ..nn.annotator import AnnotatorNet
from ..ops import kin_topk

KMEANS_INIT_CELLS = 20_000  # k-means++ seeds are drawn from at most this many cells
AUTO_MAX_NOVEL = 8  # n_types="auto" tries up to 8 novel types
AUTO_CELLS = 3000  # cells (at most) used when estimating K
AUTO_PCS = 30  # principal components the estimate of K works on
AUTO_NEIGHBOURS = 15  # neighbours whose reference share decides if a target cell is unexplained
AUTO_UNEXPLAINED_SHARE = 0.25  # ... below this fraction of the reference's overall share
AUTO_MIN_UNEXPLAINED = 10  # fewer unexplained target cells: no novel type
AUTO_MIN_SILHOUETTE = 0.25  # a best silhouette below it: the unexplained cells are one type


# ----------------------------------------------------------------------------- k-means
def nearest(features: Tensor, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``points`` (Euclidean) of every row, streamed by the ``kin_topk`` op.

    ``argmin ||x - c||^2 = argmax (x . c - ||c||^2 / 2)``: a dot-product top-k search of
    ``[x, 1]`` against ``[c, -||c||^2 / 2]``. Returns ``(N, k)`` indices and squared distances.
    """
    ones = features.new_ones(features.shape[0], 1)
    half_norm = -(points * points).sum(1, keepdim=True) / 2
    best, index = kin_topk(
        torch.cat([features, ones], 1), torch.cat([points, half_norm], 1), k=k, metric="dot"
    )
    dist = (features * features).sum(1, keepdim=True) - 2 * best
    return index, dist.clamp_min(0)


def assign(features: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every row (:func:`nearest`); indices and squared distances."""
    index, dist = nearest(features, centroids, 1)
    return index[:, 0], dist[:, 0]


def _kmeans_pp(features: Tensor, k: int, generator: torch.Generator) -> Tensor:
    n = features.shape[0]
    pool = features
    if n > KMEANS_INIT_CELLS:
        pool = features[torch.randperm(n, generator=generator)[:KMEANS_INIT_CELLS]]
    first = int(torch.randint(pool.shape[0], (1,), generator=generator))
    centroids = pool[first : first + 1]
    dist = ((pool - centroids) ** 2).sum(1)
    for _ in range(1, k):
        weights = dist / dist.sum() if float(dist.sum()) > 0 else torch.ones_like(dist) / len(dist)
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        centroids = torch.cat([centroids, pool[nxt : nxt + 1]])
        dist = torch.minimum(dist, ((pool - pool[nxt]) ** 2).sum(1))
    return centroids


def kmeans(
    features: Tensor, k: int, *, n_iter: int = 30, n_init: int = 3, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding; the best of ``n_init`` runs by inertia.

    Returns ``(labels, centroids)``. An emptied cluster keeps its previous centroid.
    """
    if k > features.shape[0]:
        raise ValueError(f"k-means: {k} clusters but only {features.shape[0]} cells; lower n_types")
    generator = torch.Generator().manual_seed(seed)
    best: tuple[float, Tensor, Tensor] | None = None
    for _ in range(n_init):
        centroids = _kmeans_pp(features, k, generator)
        for _ in range(n_iter):
            labels, _ = assign(features, centroids)
            sums = torch.zeros_like(centroids).index_add_(0, labels, features)
            counts = torch.bincount(labels, minlength=k).to(features)
            moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
            if torch.equal(moved, centroids):
                break
            centroids = moved
        labels, dist = assign(features, centroids)
        inertia = float(dist.sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, centroids)
    assert best is not None
    return best[1], best[2]


# ----------------------------------------------------------------------------- matching
def match_clusters(clusters: np.ndarray, labels: np.ndarray, n_seen: int, k: int) -> np.ndarray:
    """Class of every cluster: Hungarian matching of clusters to seen types on the labelled
    cells (``labels >= 0``), the other clusters to novel slots ``n_seen, n_seen + 1, ...`` by
    decreasing size (ties: lower cluster index first).

    Clusters of novel types hold (almost) no labelled cell, so only the ``n_seen`` clusters
    with the largest share of labelled cells are candidates for the seen types; among them the
    matching maximises the summed recall of each seen type (its labelled cells in the cluster
    over all its labelled cells, so a rare type weighs as much as a common one). Without this
    a rare seen type that no cluster captures takes an unlabelled cluster and steals a novel
    type's prior (the seed leaves that case open; docs/method.md §8.2).

    Parameters
    ----------
    clusters
        ``(N,)`` cluster index in ``[0, k)`` of every cell.
    labels
        ``(N,)`` seen class of labelled cells, ``-1`` for unlabelled cells.
    """
    labelled = labels >= 0
    overlap = np.zeros((k, n_seen))
    np.add.at(overlap, (clusters[labelled], labels[labelled]), 1)
    recall = overlap / np.maximum(overlap.sum(0, keepdims=True), 1)
    sizes = np.bincount(clusters, minlength=k)
    share = overlap.sum(1) / np.maximum(sizes, 1)
    candidates = np.sort(np.argsort(-share, kind="stable")[:n_seen])
    rows, cols = linear_sum_assignment(-recall[candidates])
    mapping = np.full(k, -1, dtype=np.int64)
    mapping[candidates[rows]] = cols
    rest = [c for c in np.argsort(-sizes, kind="stable") if mapping[c] < 0]
    mapping[rest] = n_seen + np.arange(len(rest))
    return mapping


def prior_from_clusters(clusters: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """``pi``: the share of cells in the cluster mapped to each class."""
    sizes = np.bincount(clusters, minlength=len(mapping)).astype(np.float64)
    prior = np.zeros(len(mapping))
    prior[mapping] = sizes
    return prior / prior.sum()


def novel_order(predicted: np.ndarray, n_seen: int, k: int) -> np.ndarray:
    """Novel slots ``n_seen .. k - 1`` by decreasing number of cells predicted in them (ties:
    lower slot first); slot ``order[i]`` is named ``novel_{i + 1}``."""
    counts = np.bincount(predicted, minlength=k)[n_seen:]
    return n_seen + np.argsort(-counts, kind="stable")


def class_names(seen: list[str], predicted: np.ndarray, k: int) -> list[str]:
    """Name of every class: the seen types, then ``novel_1``, ``novel_2``, ... by size."""
    names = list(seen) + [""] * (k - len(seen))
    for rank, slot in enumerate(novel_order(predicted, len(seen), k)):
        names[slot] = f"novel_{rank + 1}"
    return names


# ----------------------------------------------------------------------------- embedding
@dataclass
class Predictions:
    """Per-cell outputs on the target: features ``z``, probabilities and their argmax."""

    features: np.ndarray
    proba: np.ndarray
    label: np.ndarray


@torch.no_grad()
def contrastive_features(net: AnnotatorNet, loader: MinibatchLoader) -> tuple[Tensor, Tensor]:
    """L2-normalised projection and classifier feature ``h`` of every cell of ``loader`` (in
    loader order), streamed."""
    net.eval()
    pairs = [(out.projection, net.feature(out.z)) for out in (net(x) for _, x in loader)]
    return torch.cat([p for p, _ in pairs]).cpu(), torch.cat([h for _, h in pairs]).cpu()


@torch.no_grad()
def seed_novel_prototypes(
    net: AnnotatorNet, features: Tensor, clusters: np.ndarray, mapping: np.ndarray, n_seen: int
) -> None:
    """Set the prototype of every novel slot to the mean classifier feature of its cluster, so
    that slot ``j`` is the cluster whose size ``pi_j`` records (empty clusters leave theirs)."""
    for cluster, slot in enumerate(mapping):
        members = torch.as_tensor(clusters == cluster)
        if slot >= n_seen and bool(members.any()):
            net.prototypes[slot] = features[members].mean(0).to(net.prototypes)


@torch.no_grad()
def predict(net: AnnotatorNet, loader: MinibatchLoader, temperature: float) -> Predictions:
    """Features, class probabilities ``softmax(cos / tau)`` and argmax of every cell, streamed."""
    net.eval()
    n, k = loader.rows.size, net.n_classes
    features = np.empty((n, net.encoder[-1].out_features), dtype=np.float32)
    proba = np.empty((n, k), dtype=np.float32)
    start = 0
    for _, x in loader:
        out = net(x)
        stop = start + x.shape[0]
        features[start:stop] = out.z.cpu().numpy()
        proba[start:stop] = torch.softmax(out.cosine / temperature, 1).cpu().numpy()
        start = stop
    return Predictions(features, proba, proba.argmax(1))


def align_novel_slots(anchor: np.ndarray, proba: np.ndarray, n_seen: int) -> np.ndarray:
    """Column order putting ``proba``'s classes in ``anchor``'s order (both ``(cells, K)`` on the
    same cells): seen classes stay, novel slots (numbered arbitrarily by each network) are
    matched by the Hungarian algorithm on their co-assignment ``sum_i anchor_ia proba_ib``."""
    overlap = anchor[:, n_seen:].astype(np.float64).T @ proba[:, n_seen:].astype(np.float64)
    rows, cols = linear_sum_assignment(-overlap)
    order = np.arange(anchor.shape[1])
    order[n_seen + rows] = n_seen + cols
    return order


def average_members(members: list[Predictions], orders: list[np.ndarray]) -> Predictions:
    """An ensemble's predictions: the first member's features, the mean of the members'
    probabilities with columns put in the first member's order by ``orders``, its argmax."""
    proba = np.mean([m.proba[:, o] for m, o in zip(members, orders, strict=True)], axis=0)
    proba = proba.astype(np.float32)
    return Predictions(members[0].features, proba, proba.argmax(1))


def _principal_components(
    reference: MinibatchLoader, target: MinibatchLoader, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """PCs (fitted incrementally on minibatches of both) of at most ``AUTO_CELLS / 2`` random
    cells of each data set."""
    from sklearn.decomposition import IncrementalPCA

    rng = np.random.default_rng(seed)
    n_total = reference.rows.size + target.rows.size
    n_comp = min(AUTO_PCS, n_total - 1, reference.source.n_genes)
    pca = IncrementalPCA(n_components=n_comp)
    pending: list[np.ndarray] = []
    for loader in (reference, target):
        for _, x in loader:
            pending.append(x.cpu().numpy())
            if sum(len(p) for p in pending) >= max(n_comp, 256):
                pca.partial_fit(np.concatenate(pending))
                pending = []
    if pending and sum(len(p) for p in pending) >= n_comp:
        pca.partial_fit(np.concatenate(pending))
    return tuple(  # type: ignore[return-value]
        pca.transform(
            ld.take(ld.rows[np.sort(rng.permutation(ld.rows.size)[: AUTO_CELLS // 2])])
            .cpu()
            .numpy()
        )
        for ld in (reference, target)
    )


def unexplained(reference: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Target cells the reference does not explain: among a cell's ``AUTO_NEIGHBOURS``
    nearest cells (both data sets), the reference's share is below a quarter of its share of all
    cells (cells of a seen type have reference neighbours, cells of a new type hardly any)."""
    points = torch.as_tensor(np.concatenate([reference, target]), dtype=torch.float32)
    is_ref = np.r_[np.ones(len(reference)), np.zeros(len(target))]
    k = min(AUTO_NEIGHBOURS + 1, len(points))
    index, _ = nearest(points[len(reference) :], points, k)
    share = is_ref[index[:, 1:].numpy()].mean(1)  # the first neighbour is the cell itself
    return share < is_ref.mean() * AUTO_UNEXPLAINED_SHARE


def estimate_n_types(
    reference: MinibatchLoader, target: MinibatchLoader, n_seen: int, *, seed: int = 0
) -> tuple[int, dict[int, float]]:
    """Estimate K = seen + novel types from the target cells the reference does not explain.

    On 30 principal components (fitted on minibatches of both data sets; at most 3000 cells
    used), the target cells whose 15 nearest neighbours hold under a quarter of the reference's
    overall share of reference cells are unexplained (:func:`unexplained`). Fewer than 10:
    no novel type; else k-means with 2 .. 8 clusters on them, and the k of best silhouette is
    the number of novel types, unless that silhouette is below 0.25 (one novel type).
    Returns K and the silhouette of every K = n_seen + k tried.
    """
    from sklearn.metrics import silhouette_score

    ref_pcs, tgt_pcs = _principal_components(reference, target, seed)
    cells = tgt_pcs[unexplained(ref_pcs, tgt_pcs)]
    if len(cells) < AUTO_MIN_UNEXPLAINED:
        return n_seen, {}
    tensor = torch.as_tensor(cells, dtype=torch.float32)
    scores: dict[int, float] = {}
    for k in range(2, min(AUTO_MAX_NOVEL, len(cells) - 1) + 1):
        labels, _ = kmeans(tensor, k, seed=seed)
        if len(np.unique(labels.numpy())) > 1:
            scores[n_seen + k] = float(silhouette_score(cells, labels.numpy()))
    if not scores or max(scores.values()) < AUTO_MIN_SILHOUETTE:
        return n_seen + 1, scores
    return max(scores, key=scores.get), scores
