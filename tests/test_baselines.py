"""The peer measured beside acsleuth: kNN distance in reference PCs, top-n calls, k-means."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score

from acsleuth.baselines import PEER_K, kmeans_on_pcs, pca_knn, peer_pipeline, top_n


def _planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 reference cells of 2 types in 80 genes; a target of 40 normal cells and 2 x 15
    anomalies of 2 unseen types."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(4, 80))
    ref_types = rng.integers(0, 2, 60)
    types = np.concatenate([rng.integers(0, 2, 40), np.full(15, 2), np.full(15, 3)])
    return (
        centres[ref_types] + rng.normal(size=(60, 80)),
        centres[types] + rng.normal(size=(70, 80)),
        types,
    )


def test_pca_knn_is_the_mean_distance_to_the_nearest_reference_cells_in_reference_pcs() -> None:
    reference, target, _ = _planted()
    pca = PCA(50, random_state=0).fit(reference)
    z_ref, z = pca.transform(reference), pca.transform(target)
    distances = np.sqrt(((z[:, None, :] - z_ref[None]) ** 2).sum(-1))
    slow = np.sort(distances, axis=1)[:, :PEER_K].mean(1)
    np.testing.assert_allclose(pca_knn(reference, target), slow, rtol=1e-6)


def test_top_n_calls_the_highest_scores_and_breaks_ties_by_position() -> None:
    called = top_n(np.array([0.1, 0.9, 0.5, 0.9]), 2)
    assert called.tolist() == [False, True, False, True]
    assert not top_n(np.ones(3), 0).any()
    assert top_n(np.array([2.0, 2.0, 1.0]), 1).tolist() == [True, False, False]


def test_the_peer_finds_and_separates_two_planted_unseen_types() -> None:
    reference, target, types = _planted(1)
    scores, called, labels = peer_pipeline(reference, target, 30, 2)
    truth = types >= 2
    assert called.sum() == 30 and (called == truth).all()
    assert scores[truth].min() > scores[~truth].max()
    assert normalized_mutual_info_score(types[called], labels) == 1.0
    assert len(kmeans_on_pcs(target[:3], 5)) == 3  # more clusters than rows: one per row
