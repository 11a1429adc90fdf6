"""The peer a user would otherwise pick: kNN distance to the reference in its principal
components, with the top cells called and k-means subtypes.

Measured beside acsleuth in the same run by the demo and by ``benchmarks/eval_detection.py``
and ``benchmarks/eval_pipeline.py``; it was the strongest peer on several unseen PBMC types
at once (benchmarks/RESULTS.md, issue 16).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from .stages.subtype import kmeans

PEER_PCS, PEER_K, SUBTYPE_PCS = 50, 5, 30


def pca_knn(reference_x: np.ndarray, x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Mean Euclidean distance of each row of ``x`` to its ``PEER_K`` nearest reference rows,
    in ``PEER_PCS`` principal components of ``reference_x`` (higher = more anomalous)."""
    pca = PCA(min(PEER_PCS, *reference_x.shape), random_state=seed).fit(reference_x)
    index = NearestNeighbors(n_neighbors=PEER_K).fit(pca.transform(reference_x))
    return index.kneighbors(pca.transform(x))[0].mean(1)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Boolean calls of the ``n`` highest ``scores`` (ties by position)."""
    called = np.zeros(len(scores), dtype=bool)
    called[np.argsort(-scores, kind="stable")[:n]] = True
    return called


def kmeans_on_pcs(x: np.ndarray, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """k-means labels of the rows of ``x`` on their first ``SUBTYPE_PCS`` principal components."""
    n_pcs = min(SUBTYPE_PCS, x.shape[0] - 1, x.shape[1])
    z = PCA(n_pcs, random_state=seed).fit_transform(x)
    return kmeans(z, min(n_clusters, len(x)), seed=seed).labels_


def peer_pipeline(
    reference_x: np.ndarray, x: np.ndarray, n_anomalies: int, n_subtypes: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The peer end to end: ``(scores, calls, subtype labels of the called rows)``, told the
    number of anomalies and of subtypes (acsleuth is told neither)."""
    scores = pca_knn(reference_x, x, seed=seed)
    called = top_n(scores, n_anomalies)
    return scores, called, kmeans_on_pcs(x[called], n_subtypes, seed=seed)


__all__ = ["kmeans_on_pcs", "pca_knn", "peer_pipeline", "top_n"]
