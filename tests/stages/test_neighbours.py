"""The reference-neighbour score, its null distances and the count of anomalies without a ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import FastACsleuth

from acsleuth import datasets
from acsleuth._constants import Params
from acsleuth.stages.neighbours import (
    NeighbourConfig,
    ReferenceNeighbours,
    count_anomalies,
    fit_neighbours,
    knn_distance,
    rank_average,
)
from acsleuth.stages.score import call_anomalies, warm_ranking


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


def test_a_count_on_a_sample_of_each_batch_is_scaled_to_the_batch() -> None:
    """Every cell twice in a batch of 2n counts exactly as the n cells once with the batch's
    size given; a sample that is the whole batch counts as without sizes."""
    reference, target = _planted()
    neighbours = fit_neighbours(
        lambda rows: reference[rows], len(reference), NeighbourConfig(n_components=10, k=5), seed=0
    )
    distances = neighbours.distances(torch.from_numpy(target))
    batches = np.arange(400) % 2
    whole = count_anomalies(distances, neighbours, batches=batches)
    sized = count_anomalies(
        distances, neighbours, batches=batches, batch_sizes=np.array([200, 200])
    )
    assert sized == whole
    doubled = count_anomalies(distances.repeat(1, 2), neighbours, batches=np.tile(batches, 2))
    scaled = count_anomalies(
        distances, neighbours, batches=batches, batch_sizes=np.array([400, 400])
    )
    assert scaled == doubled and abs(scaled - 2 * whole) <= 1
    half = count_anomalies(distances[:, batches == 0], neighbours, batch_sizes=np.array([400]))
    assert abs(half - 2 * count_anomalies(distances[:, batches == 0], neighbours)) <= 1


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


def test_the_shifted_null_is_what_shifted_normal_cells_score() -> None:
    """A fitted shift pulls normal cells nearer the index than the plain null; the null of
    left-out cells shifted the same way matches them, and the count uses it."""
    reference, target = _planted(n_normal=300, n_anomalous=100, seed=2)
    neighbours = fit_neighbours(
        lambda rows: reference[rows],
        len(reference),
        NeighbourConfig(n_components=10, k=5, n_folds=2),
        seed=0,
    )
    codes = np.zeros(400, dtype=np.int64)
    x = torch.from_numpy(target)
    offsets = neighbours.batch_offsets(x, codes, 1)
    distances = neighbours.distances(x, offsets=offsets[:, torch.from_numpy(codes)])
    below = {"null": [], "shifted_null": []}
    for fold, values in zip(neighbours.folds, distances, strict=True):
        assert torch.equal(fold.shifted_null, fold.shifted_null.sort().values)
        for name in below:
            q = torch.quantile(getattr(fold, name).double(), 0.6)
            below[name].append(float((values[:300] <= q).double().mean()))
    assert abs(np.mean(below["shifted_null"]) - 0.6) < abs(np.mean(below["null"]) - 0.6)
    plain, shifted = (
        count_anomalies(distances, neighbours, shifted=flag) for flag in (False, True)
    )
    assert abs(shifted - 100) < abs(plain - 100) and shifted > plain


def test_a_batch_moved_far_gets_a_lifted_null_and_a_batch_left_in_place_does_not() -> None:
    """A per-gene effect of sd 2 in count space (zeros stay zeros, so no shift undoes it)
    leaves one batch's normal cells farther than the null after the shift onto the
    reference, and the plain count takes many of them for anomalies; lifting that batch's
    null brings the count nearer the truth (real PBMCs, 4 seeds). A batch the shift barely
    moves keeps its plain null."""
    errors = {"plain": [], "lifted": []}
    for seed in range(4):
        ref, tgt = datasets.pbmc_holdout(
            ["CD19+ B", "CD56+ NK"], anomaly_ratio=0.3, n_batches=2, batch_effect=2.0, seed=seed
        )
        reference = ref.X.toarray().astype(np.float32)
        neighbours = fit_neighbours(
            lambda rows, r=reference: r[rows], len(reference), NeighbourConfig(), seed=0
        )
        codes = np.unique(tgt.obs["batch"].astype(str), return_inverse=True)[1]
        x = torch.from_numpy(tgt.X.toarray().astype(np.float32))
        offsets = neighbours.batch_offsets(x, codes, 2)
        distances = neighbours.distances(x, offsets=offsets[:, torch.from_numpy(codes)])
        truth = int(tgt.obs["is_anomaly"].sum())
        for name, given in (("plain", None), ("lifted", offsets)):
            count = count_anomalies(
                distances, neighbours, shifted=True, batches=codes, offsets=given
            )
            errors[name].append(abs(count - truth))
    assert np.mean(errors["plain"]) > 60  # measured 94: 1.6-1.8x the truth
    assert np.mean(errors["lifted"]) < 0.6 * np.mean(errors["plain"])  # measured 38.5
    # a toy batch left in place: its offsets are noise, so nothing is lifted
    reference, target = _planted(n_normal=300, n_anomalous=100, seed=2)
    neighbours = fit_neighbours(
        lambda rows: reference[rows], len(reference), NeighbourConfig(n_components=10, k=5), seed=0
    )
    codes = np.zeros(400, dtype=np.int64)
    x = torch.from_numpy(target)
    offsets = neighbours.batch_offsets(x, codes, 1)
    distances = neighbours.distances(x, offsets=offsets[:, torch.from_numpy(codes)])
    assert count_anomalies(
        distances, neighbours, shifted=True, batches=codes, offsets=offsets
    ) == count_anomalies(distances, neighbours, shifted=True)


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
    assert torch.equal(copy.folds[0].shifted_null, neighbours.folds[0].shifted_null)
    saved_before = {k: v for k, v in neighbours.state_dict().items() if "shifted_null" not in k}
    older = ReferenceNeighbours.from_state_dict(saved_before)  # a model saved before it existed
    assert older.folds[0].shifted_null is None
    distances = older.distances(x)
    assert count_anomalies(distances, older, shifted=True) == count_anomalies(distances, older)


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
    for bad in ((1.0,), (0.5, 0.0), ()):
        with pytest.raises(ValueError, match="quantiles must be in"):
            count_anomalies(torch.zeros(10, 4), neighbours, quantiles=bad)
    with pytest.raises(ValueError, match="no score given"):
        rank_average()


def test_the_mmd_predictor_starts_from_the_distance_and_ensemble_averages_ranks() -> None:
    from acsleuth import datasets

    reference, target = datasets.synthetic(96, 80, 60, anomaly_ratio=0.25, seed=3)
    model = FastACsleuth(score_epochs=1, warm_epochs=1).fit(reference)
    result = model.evaluate(target)
    assert model.params["score"] == "mmd" and model.params["warm_ranking"] == "knn"
    np.testing.assert_array_equal(result.score, result.scores["mmd"])
    assert (
        result.anomaly.any()
        and result.score[result.anomaly].min() >= result.score[~result.anomaly].max()
    )
    np.testing.assert_allclose(
        result.scores["ensemble"],
        rank_average(result.scores["mmd"], result.scores["knn"]),
        rtol=1e-6,
    )
    model.params["warm_ranking"] = "scaled"
    from_scaled = model.evaluate(target).scores
    np.testing.assert_array_equal(from_scaled["knn"], result.scores["knn"])
    assert not np.allclose(from_scaled["mmd"], result.scores["mmd"])
    model.neighbours_ = None  # as a model saved before the index existed: from "scaled"
    with pytest.raises(ValueError, match="score='knn' needs the reference neighbour index"):
        model.evaluate(target, score="knn")
    without_index = model.evaluate(target, score="ensemble").scores
    np.testing.assert_array_equal(without_index["mmd"], from_scaled["mmd"])
    np.testing.assert_allclose(
        without_index["ensemble"], rank_average(from_scaled["mmd"]), rtol=1e-6
    )


def test_warm_ranking_is_the_mean_fold_distance_or_the_scaled_residual() -> None:
    knn, scaled = torch.rand(20), torch.rand(20)
    scores = {"knn": knn, "scaled": scaled}
    assert warm_ranking(scores, Params()) is knn
    assert warm_ranking(scores, Params(warm_ranking="scaled")) is scaled
    assert warm_ranking({"scaled": scaled}, Params()) is scaled
    with pytest.raises(ValueError, match="warm_ranking must be one of"):
        Params(warm_ranking="mmd")


def test_a_target_unlike_every_reference_cell_falls_back_to_the_mixture() -> None:
    """Half the genes zeroed: no target cell is as near the reference as the null, so the
    count (every cell) is not used and the pipeline keeps normal cells to correct."""
    from acsleuth import datasets

    reference, target = datasets.synthetic(120, 100, 50, anomaly_ratio=0.3, seed=1)
    model = FastACsleuth(score_epochs=1, warm_epochs=1).fit(reference)
    x = target.X.toarray()
    x[:, 25:] = 0
    target.X = x
    result = model.evaluate(target)
    assert 0 < result.anomaly.sum() < target.n_obs


def test_several_folds_fit_their_pca_on_a_sample_one_fold_on_every_pool_cell() -> None:
    reference, target = _planted()
    read = lambda rows: reference[rows]  # noqa: E731
    full = fit_neighbours(read, 400, NeighbourConfig(n_components=10, k=5), seed=0)
    capped = fit_neighbours(
        read, 400, NeighbourConfig(n_components=10, k=5, fold_pca_cells=60), seed=0
    )
    pool_mean = torch.from_numpy(np.delete(reference, _left_out(400, 10, seed=0)[0], 0).mean(0))
    torch.testing.assert_close(full.folds[0].mean, pool_mean.float(), rtol=0, atol=1e-5)
    assert not torch.allclose(capped.folds[0].mean, pool_mean.float(), atol=1e-2)
    assert torch.equal(capped.folds[0].null, capped.folds[0].null.sort().values)
    score = capped.distances(torch.from_numpy(target)).mean(0).numpy()
    assert score[300:].min() > np.median(score[:300])  # still ranks the anomalies first
    one_fold = NeighbourConfig(n_components=10, k=3, max_calibration=20, fold_pca_cells=60)
    single = fit_neighbours(lambda rows: reference[rows], 200, one_fold, seed=0)
    kept = np.delete(reference[:200], _left_out(200, 1, seed=0, size=20)[0], 0)
    torch.testing.assert_close(
        single.folds[0].mean, torch.from_numpy(kept.mean(0)).float(), rtol=0, atol=1e-5
    )


def _left_out(n: int, n_folds: int, *, seed: int, size: int | None = None) -> list[np.ndarray]:
    """The cells each fold leaves out, drawn as :func:`fit_neighbours` draws them."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[:size])] if n_folds == 1 else np.array_split(order, n_folds)
