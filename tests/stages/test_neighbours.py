"""The reference-neighbour score, its null distances and the count of anomalies without a ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth.stages.neighbours import (
    NeighbourConfig,
    ReferenceNeighbours,
    count_anomalies,
    fit_neighbours,
    knn_distance,
    rank_average,
)
from acsleuth.stages.score import call_anomalies


def _planted(n_reference: int = 400, n_normal: int = 300, n_anomalous: int = 100, seed: int = 0):
    """Three normal cell types (cluster centres in 30 genes) and one anomalous type."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, size=(4, 30))

    def cells(n: int, types: list[int]) -> np.ndarray:
        return (centres[rng.choice(types, n)] + rng.normal(size=(n, 30))).astype(np.float32)

    return cells(n_reference, [0, 1, 2]), np.concatenate(
        [cells(n_normal, [0, 1, 2]), cells(n_anomalous, [3])]
    )


def test_knn_distance_equals_brute_force_in_chunks() -> None:
    gen = torch.Generator().manual_seed(0)
    query, keys = torch.randn(37, 6, generator=gen), torch.randn(50, 6, generator=gen) * 2
    slow = torch.cdist(query.double(), keys.double()).topk(4, largest=False).values.mean(1)
    torch.testing.assert_close(
        knn_distance(query, keys, 4, chunk=8).double(), slow, atol=1e-4, rtol=1e-5
    )
    # hand-computed: nearest of (0,0) among (3,4), (6,8), (0,1) is 1, the two nearest 3
    keys = torch.tensor([[3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
    assert knn_distance(torch.zeros(1, 2), keys, 1).item() == pytest.approx(1.0)
    assert knn_distance(torch.zeros(1, 2), keys, 2).item() == pytest.approx(3.0)


def test_anomalies_lie_farther_and_are_counted_without_a_ratio() -> None:
    reference, target = _planted()
    neighbours = fit_neighbours(
        lambda rows: reference[rows], len(reference), NeighbourConfig(n_components=10, k=5), seed=0
    )
    assert len(neighbours.folds) == 10 and neighbours.folds[0].keys.shape == (360, 10)
    distances = neighbours.distances(torch.from_numpy(target))
    assert distances.shape == (10, 400)
    score = distances.mean(0).numpy()
    assert score[300:].min() > np.median(score[:300])  # orientation: anomalies score higher
    # the null is what new normal cells score: medians within 5 %
    null = torch.cat([fold.null for fold in neighbours.folds]).median().item()
    assert null == pytest.approx(float(np.median(distances[:, :300].numpy())), rel=0.05)
    count = count_anomalies(distances, neighbours)
    assert 85 <= count <= 120
    anomaly, threshold = call_anomalies(torch.from_numpy(score), "knn", None, count)
    assert anomaly.sum() == count and score[anomaly].min() == threshold


def test_a_shifted_batch_is_moved_back_onto_the_reference() -> None:
    """A constant shift of one batch's genes (normal and anomalous cells alike) is estimated
    from its cells and removed: its normal cells score as unshifted ones do, its anomalies
    stay far, and the count is unchanged; an unshifted batch gets (almost) no shift."""
    reference, target = _planted(n_normal=300, n_anomalous=100)
    neighbours = fit_neighbours(
        lambda rows: reference[rows], len(reference), NeighbourConfig(n_components=10, k=5), seed=0
    )
    shift = np.random.default_rng(4).normal(0.0, 2.0, 30).astype(np.float32)
    codes = np.arange(400) % 2  # batch 1: every other cell, normal and anomalous
    shifted = torch.from_numpy(target + np.outer(codes, shift).astype(np.float32))
    offsets = neighbours.batch_offsets(shifted, codes, 2)
    assert offsets.shape == (10, 2, 10)
    for fold, offset in zip(neighbours.folds, offsets, strict=True):
        expected = -torch.from_numpy(shift) @ fold.components
        assert (offset[1] - expected).norm() < 0.2 * expected.norm()
        assert offset[0].norm() < 0.15 * expected.norm()
    plain = neighbours.distances(torch.from_numpy(target)).mean(0).numpy()
    naive = neighbours.distances(shifted).mean(0).numpy()
    aligned = (
        neighbours.distances(shifted, offsets=offsets[:, torch.from_numpy(codes)]).mean(0).numpy()
    )
    batch1_normal = (codes == 1) & (np.arange(400) < 300)
    assert np.median(naive[batch1_normal]) > 1.3 * np.median(plain[batch1_normal])
    np.testing.assert_allclose(
        np.median(aligned[batch1_normal]), np.median(plain[batch1_normal]), rtol=0.05
    )
    assert aligned[300:].min() > np.median(aligned[:300])  # anomalies still score higher
    counts = [
        count_anomalies(neighbours.distances(x, offsets=o), neighbours)
        for x, o in ((shifted, None), (shifted, offsets[:, torch.from_numpy(codes)]))
    ]
    assert counts[0] > 150 and 85 <= counts[1] <= 120  # the naive count takes in the shifted batch


def test_reference_cells_are_not_their_own_null() -> None:
    """Scored by a PCA fitted on themselves, reference cells would look farther than new cells."""
    reference, target = _planted(n_anomalous=1)
    neighbours = fit_neighbours(
        lambda rows: reference[rows], len(reference), NeighbourConfig(n_components=10, k=5), seed=1
    )
    distances = neighbours.distances(torch.from_numpy(target[:300]))
    assert count_anomalies(distances, neighbours) <= 30  # at most 1 normal cell in 10 counted


def test_large_reference_gets_one_fold_and_state_round_trips() -> None:
    reference, target = _planted(n_reference=200)
    config = NeighbourConfig(k=3, max_calibration=20)  # 200 >= 10 x 20 cells: one fold
    neighbours = fit_neighbours(lambda rows: reference[rows], 200, config, seed=0)
    assert len(neighbours.folds) == 1 and neighbours.folds[0].null.shape == (20,)
    assert neighbours.folds[0].keys.shape[0] == 180
    copy = ReferenceNeighbours.from_state_dict(neighbours.state_dict())
    x = torch.from_numpy(target)
    assert torch.equal(copy.distances(x), neighbours.distances(x)) and copy.k == 3


def test_rank_average_and_ratio_calls() -> None:
    np.testing.assert_allclose(
        rank_average(np.array([3.0, 1.0, 2.0]), np.array([10.0, 30.0, 20.0])), [2 / 3, 2 / 3, 2 / 3]
    )
    anomaly, threshold = call_anomalies(torch.tensor([0.1, 0.9, 0.5, 0.7]), "knn", 0.5, count=3)
    assert anomaly.tolist() == [False, True, False, True] and threshold == pytest.approx(0.7)


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="k = 5 neighbours but 3 reference cells"):
        knn_distance(torch.zeros(2, 2), torch.zeros(3, 2), 5)
    with pytest.raises(ValueError, match="needs at least 10"):
        fit_neighbours(
            lambda rows: np.zeros((len(rows), 4), np.float32), 6, NeighbourConfig(k=5), seed=0
        )
    reference, _ = _planted(n_reference=60)
    neighbours = fit_neighbours(lambda rows: reference[rows], 60, NeighbourConfig(k=3), seed=0)
    with pytest.raises(ValueError, match="quantile must be in"):
        count_anomalies(torch.zeros(10, 4), neighbours, quantile=1.0)
    with pytest.raises(ValueError, match="no score given"):
        rank_average()


def test_default_score_is_the_rank_average_of_mmd_and_knn() -> None:
    from acsleuth import ACsleuth, datasets

    reference, target = datasets.synthetic(96, 80, 60, anomaly_ratio=0.25, seed=3)
    model = ACsleuth(
        prepare_epochs=2,
        train_epochs=1,
        score_epochs=1,
        warm_epochs=1,
        batch_size=32,
        n_memory=50,
        device="cpu",
        verbose=False,
    ).fit(reference)
    result = model.evaluate(target)
    np.testing.assert_allclose(
        result.score, rank_average(result.scores["mmd"], result.scores["knn"]), rtol=1e-6
    )
    assert (
        result.anomaly.any()
        and result.score[result.anomaly].min() >= result.score[~result.anomaly].max()
    )
    model.neighbours_ = None  # as a model saved before the index existed
    with pytest.raises(ValueError, match="score='knn' needs the reference neighbour index"):
        model.evaluate(target, score="knn")
    ranks = model.evaluate(target).score
    np.testing.assert_allclose(ranks, rank_average(result.scores["mmd"]), rtol=1e-6)


def test_a_target_unlike_every_reference_cell_falls_back_to_the_mixture() -> None:
    """Half the genes zeroed: no target cell is as near the reference as the null, so the
    count (every cell) is not used and the pipeline keeps normal cells to correct."""
    from acsleuth import ACsleuth, datasets

    reference, target = datasets.synthetic(120, 100, 50, anomaly_ratio=0.3, seed=1)
    model = ACsleuth(
        prepare_epochs=2,
        train_epochs=1,
        score_epochs=1,
        warm_epochs=1,
        batch_size=32,
        n_memory=50,
        device="cpu",
        verbose=False,
    ).fit(reference)
    x = target.X.toarray()
    x[:, 25:] = 0
    target.X = x
    result = model.evaluate(target)
    assert 0 < result.anomaly.sum() < target.n_obs
