"""Novel types the open-world annotator left out (a deliberate deviation, docs/method.md §8.2).

scDET is told K, so it keeps ``K - n_seen`` novel slots, but a novel type close to a seen one
(pbmc's T-cell subsets) can end up called seen while its slot stays (almost) empty. With
``OpenWorldConfig.fill_empty_slots`` (the default) the cells called seen are searched for the
missing types, the way scDET's own prior estimate finds novel clusters: k-means with
``n_seen + n_empty`` clusters on principal components of the expression of the reference
(a seeded sample) and the target cells called seen, clusters matched to the seen types on the
reference labels (:func:`~acsleuth.stages.annotate.match_clusters`); an unmatched cluster the
reference does not explain (its reference share below a quarter of the overall one, the test
of ``n_types="auto"``) and holding at least 10 target cells moves, whole, into an empty slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data import MinibatchLoader
from .annotate import (
    AUTO_MIN_UNEXPLAINED,
    AUTO_UNEXPLAINED_SHARE,
    Predictions,
    fit_pcs,
    kmeans,
    match_clusters,
)

# a novel slot holding fewer target cells is empty, and a cluster needs this many target cells
# to fill one (the number below which n_types="auto" finds no novel type)
MIN_TYPE_CELLS = AUTO_MIN_UNEXPLAINED
# an unmatched cluster is unexplained when its reference share is below this fraction of the
# reference's share of all clustered cells (the test of n_types="auto")
UNEXPLAINED_SHARE = AUTO_UNEXPLAINED_SHARE
SEARCH_KMEANS_INIT = 10  # k-means restarts, the best by inertia


def sample_rows(codes: np.ndarray, max_cells: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_cells`` cells of ``codes``, a seeded sample keeping one
    cell of every type; all cells when there are no more."""
    rows = np.arange(codes.size)
    if rows.size <= max_cells:
        return rows
    rng = np.random.default_rng(seed)
    firsts = np.unique(codes, return_index=True)[1]  # one cell of every type
    rest = rng.choice(np.setdiff1d(rows, firsts), max_cells - firsts.size, replace=False)
    return np.sort(np.concatenate([firsts, rest]))


@dataclass
class NovelSearch:
    """Principal axes of the fitted data and a labelled sample of the reference on them."""

    mean: Tensor  # (G,)
    components: Tensor  # (P, G)
    points: Tensor  # (n, P) reference cells
    codes: Tensor  # (n,) their types

    @torch.no_grad()
    def project(self, loader: MinibatchLoader) -> Tensor:
        """``(cells, P)`` components of every cell of ``loader``, streamed in order."""
        parts = [
            ((x.float() - self.mean.to(x.device)) @ self.components.T.to(x.device)).cpu()
            for _, x in loader
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.components.shape[0])

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "mean": self.mean,
            "components": self.components,
            "points": self.points,
            "codes": self.codes,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> NovelSearch:
        return cls(state["mean"], state["components"], state["points"], state["codes"])


def fit_novel_search(
    reference: MinibatchLoader,
    target: MinibatchLoader,
    codes: np.ndarray,
    *,
    max_cells: int,
    seed: int,
) -> NovelSearch:
    """Principal components of both data sets (fitted incrementally on their minibatches,
    :func:`~acsleuth.stages.annotate.fit_pcs`) and at most ``max_cells`` reference cells of
    types ``codes`` on them (a seeded sample keeping one cell of every type)."""
    pca = fit_pcs(reference, target)
    rows = sample_rows(codes, max_cells, seed)
    x = reference.take(reference.rows[rows]).cpu().numpy()
    mean = torch.as_tensor(pca.mean_, dtype=torch.float32)
    components = torch.as_tensor(pca.components_, dtype=torch.float32)
    points = (torch.as_tensor(x, dtype=torch.float32) - mean) @ components.T
    return NovelSearch(mean, components, points, torch.as_tensor(codes[rows], dtype=torch.long))


def fill_empty_slots(
    pred: Predictions, search: NovelSearch, loader: MinibatchLoader, n_seen: int, *, seed: int
) -> Predictions:
    """``pred`` (the cells of ``loader``, in order) with target-only clusters of the cells it
    calls seen moved into its empty novel slots (module docstring). A moved cell's seen
    probability mass goes to its new slot. Without an empty slot ``pred`` is returned as it is.
    """
    k = pred.proba.shape[1]
    sizes = np.bincount(pred.label, minlength=k)[n_seen:]
    empty = n_seen + np.flatnonzero(sizes < MIN_TYPE_CELLS)
    called = np.flatnonzero(pred.label < n_seen)
    if empty.size == 0 or called.size < MIN_TYPE_CELLS:
        return pred
    points = torch.cat([search.points, search.project(loader)[called]])
    labels = np.concatenate([search.codes.numpy(), np.full(called.size, -1)])
    n_clusters = n_seen + empty.size
    if n_clusters > len(points):
        return pred
    clusters, _ = kmeans(points, n_clusters, n_init=SEARCH_KMEANS_INIT, seed=seed)
    clusters = clusters.numpy()
    mapping = match_clusters(clusters, labels, n_seen, n_clusters)
    overall = float((labels >= 0).mean())
    on_target = clusters[len(search.points) :]
    label, proba = pred.label.copy(), pred.proba.copy()
    slots = list(empty)
    for cluster in np.argsort(mapping, kind="stable"):  # unmatched clusters by decreasing size
        members = on_target == cluster
        if mapping[cluster] < n_seen or not slots or members.sum() < MIN_TYPE_CELLS:
            continue
        if float((labels[clusters == cluster] >= 0).mean()) >= UNEXPLAINED_SHARE * overall:
            continue
        cells, slot = called[members], slots.pop(0)
        label[cells] = slot
        proba[cells, slot] += proba[cells, :n_seen].sum(1)
        proba[cells, :n_seen] = 0.0
    return Predictions(pred.features, proba, label)
