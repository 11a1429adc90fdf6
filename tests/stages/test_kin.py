"""Stage II: nearest kin against brute force, and the learned mapping on clustered embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acsleuth.ops import kin_topk
from acsleuth.stages.kin import KinConfig, learned_kin, nearest_kin


def _brute_force(target: torch.Tensor, reference: torch.Tensor, metric: str) -> np.ndarray:
    if metric == "cosine":
        target, reference = F.normalize(target, dim=1), F.normalize(reference, dim=1)
    sim = (target.double() @ reference.double().T).numpy()
    return np.argmax(sim, axis=1)  # first maximum: the lowest index among ties


def _clusters(n_target: int = 120, n_reference: int = 160, p: int = 16, n_clusters: int = 4):
    gen = torch.Generator().manual_seed(0)
    centers = 4.0 * torch.randn(n_clusters, p, generator=gen)
    t_label, r_label = torch.arange(n_target) % n_clusters, torch.arange(n_reference) % n_clusters
    target = centers[t_label] + torch.randn(n_target, p, generator=gen)
    reference = centers[r_label] + torch.randn(n_reference, p, generator=gen)
    return target, reference, t_label.numpy(), r_label.numpy()


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_nearest_kin_equals_brute_force(backend, metric) -> None:
    gen = torch.Generator().manual_seed(1)
    target, reference = torch.randn(50, 8, generator=gen), torch.randn(300, 8, generator=gen)
    kin = nearest_kin(target, reference, metric=metric)
    assert kin.dtype == np.int64 and kin.shape == (50,)
    np.testing.assert_array_equal(kin, _brute_force(target, reference, metric))


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_nearest_kin_breaks_ties_by_the_lowest_index(backend, metric) -> None:
    reference = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # row 2 is equally close to every [1, 0] and [0, 1] row: the lowest index wins
    np.testing.assert_array_equal(nearest_kin(target, reference, metric=metric), [1, 0, 0])


def test_nearest_kin_of_no_target_cell_and_bad_shapes() -> None:
    assert nearest_kin(torch.zeros(0, 4), torch.ones(3, 4)).shape == (0,)
    with pytest.raises(ValueError, match="no cell"):
        nearest_kin(torch.ones(2, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="same encoder"):
        nearest_kin(torch.ones(2, 4), torch.ones(3, 5))


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_learned_kin_picks_candidates_and_mostly_agrees_with_nearest(metric) -> None:
    target, reference, t_label, r_label = _clusters()
    config = KinConfig(epochs=10, k=8, batch_size=64, metric=metric)
    torch.manual_seed(0)
    kin = learned_kin(target, reference, config=config, seed=0, verbose=False)
    assert kin.dtype == np.int64 and kin.shape == (target.shape[0],)
    _, candidates = kin_topk(target, reference, k=8, metric=metric)
    assert (candidates.numpy() == kin[:, None]).any(1).all()
    assert (r_label[kin] == t_label).all()  # well-separated clusters: always the right one
    assert (kin == nearest_kin(target, reference, metric=metric)).mean() > 0.8


def test_learned_kin_learns_the_clusters_from_a_uniform_start_over_every_reference_cell() -> None:
    target, reference, t_label, r_label = _clusters(n_target=40, n_reference=12)
    # k = 32 > 12 reference cells: every row starts with equal weight on all of them
    config = KinConfig(epochs=30, batch_size=16, init_weight=0.0)
    torch.manual_seed(0)
    kin = learned_kin(target, reference, config=config, verbose=False)
    assert ((kin >= 0) & (kin < 12)).all()
    assert (r_label[kin] == t_label).mean() > 0.95  # 0.675 after 5 epochs, 1.0 after 30


def test_learned_kin_is_reproducible() -> None:
    target, reference, _, _ = _clusters(n_target=60, n_reference=80)
    config = KinConfig(epochs=3, k=8, batch_size=32, init_weight=0.1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(learned_kin(target, reference, config=config, seed=3, verbose=False))
    np.testing.assert_array_equal(*runs)
