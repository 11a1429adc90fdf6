"""scDET's prior estimate: k-means on the kin_topk op, Hungarian matching, novel naming."""

from __future__ import annotations

import numpy as np
import torch

from acsleuth.stages.annotate import (
    Predictions,
    align_novel_slots,
    assign,
    average_members,
    class_names,
    kmeans,
    match_clusters,
    novel_order,
    prior_from_clusters,
)


def test_assign_equals_brute_force_nearest_centroid() -> None:
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(300, 8, generator=g), torch.randn(7, 8, generator=g)
    index, dist = assign(x, c)
    brute = torch.cdist(x, c) ** 2
    assert torch.equal(index, brute.argmin(1))
    torch.testing.assert_close(dist, brute.min(1).values, rtol=1e-4, atol=1e-4)


def test_kmeans_recovers_planted_blobs() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(300) % 3
    x = centres[truth] + 0.5 * torch.randn(300, 2, generator=g)
    labels, _ = kmeans(x, 3, seed=0)
    pairs = {(int(a), int(b)) for a, b in zip(truth, labels, strict=True)}
    assert len(pairs) == 3  # a bijection between planted blobs and clusters


def test_hungarian_maps_seen_clusters_and_orders_novel_ones_by_size() -> None:
    # clusters: 0 = seen type 1, 1 = novel (40 cells), 2 = seen type 0, 3 = novel (60 cells)
    clusters = np.array([0] * 30 + [1] * 40 + [2] * 20 + [3] * 60)
    labels = np.full(clusters.size, -1)
    labels[:10] = 1  # ten labelled cells of type 1 in cluster 0
    labels[70:75] = 0  # five labelled cells of type 0 in cluster 2
    mapping = match_clusters(clusters, labels, n_seen=2, k=4)
    assert mapping.tolist() == [1, 3, 0, 2]  # the larger novel cluster takes slot 2
    np.testing.assert_allclose(
        prior_from_clusters(clusters, mapping), [20 / 150, 30 / 150, 60 / 150, 40 / 150]
    )


def test_a_seen_type_no_cluster_captures_takes_a_labelled_cluster_not_a_novel_one() -> None:
    # type 2's only labelled cell sits in type 0's cluster; clusters 1 (labelled) and 3 (not) are free
    clusters = np.array([0] * 20 + [1] * 20 + [2] * 20 + [3] * 50)
    labels = np.full(clusters.size, -1)
    labels[:5], labels[5] = 0, 2
    labels[20:30] = 1  # cluster 1: ten labelled cells of type 1
    labels[40:42] = 1  # two type-1 cells in cluster 2 as well
    mapping = match_clusters(clusters, labels, n_seen=3, k=4)
    assert mapping[3] == 3  # the unlabelled cluster stays novel
    assert sorted(mapping[:3].tolist()) == [0, 1, 2]


def test_novel_names_follow_predicted_sizes() -> None:
    predicted = np.array([0, 1, 3, 3, 3, 2, 4, 4])
    assert novel_order(predicted, 2, 5).tolist() == [3, 4, 2]
    assert class_names(["a", "b"], predicted, 5) == ["a", "b", "novel_3", "novel_1", "novel_2"]


def test_novel_slots_of_a_second_network_are_aligned_before_averaging() -> None:
    # 2 seen classes, 3 novel slots; the second network numbers its novel slots 4, 2, 3
    rng = np.random.default_rng(0)
    anchor = rng.dirichlet(np.ones(5) * 0.2, size=60).astype(np.float32)
    other = np.empty_like(anchor)
    other[:, :2] = anchor[:, :2]
    other[:, [4, 2, 3]] = anchor[:, [2, 3, 4]]
    order = align_novel_slots(anchor, other, n_seen=2)
    np.testing.assert_array_equal(order, [0, 1, 4, 2, 3])
    np.testing.assert_array_equal(other[:, order], anchor)
    features = np.zeros((60, 4), dtype=np.float32)
    members = [
        Predictions(features, anchor, anchor.argmax(1)),
        Predictions(features + 1, other, other.argmax(1)),
    ]
    mean = average_members(members, [np.arange(5), order])
    np.testing.assert_allclose(mean.proba, anchor, rtol=1e-6)
    np.testing.assert_array_equal(mean.label, anchor.argmax(1))
    assert mean.features is features  # the first member's
    # without the alignment the average would blur the novel slots
    assert not np.allclose((anchor + other) / 2, anchor)
