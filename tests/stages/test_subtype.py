"""Stage IV: Student-t assignment, DESC, the choice of k and the fusion encoder (docs/method.md §4)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import acsleuth
from acsleuth.data import prepare
from acsleuth.metrics import nmi
from acsleuth.nn import Encoder, Generator
from acsleuth.stages.fusion import FusionEncoder
from acsleuth.stages.subtype import (
    SubtypeConfig,
    choose_n_subtypes,
    desc_cluster,
    soft_assignment,
    subtype_anomalies,
    target_distribution,
)

FAST = replace(SubtypeConfig(), epochs=5, n_init=5)


def _blobs(n_per: int = 50, n_clusters: int = 4, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 6.0, (n_clusters, dim))
    truth = np.repeat(np.arange(n_clusters), n_per)
    z = centres[truth] + rng.normal(0.0, 1.0, (len(truth), dim))
    return torch.as_tensor(z, dtype=torch.float32), truth


def test_student_t_assignment_matches_a_hand_computation() -> None:
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    mu = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    q = soft_assignment(z, mu, dof=1.0)  # kernels 1/(1 + d^2): (1, 1/5) and (1/2, 1/2)
    torch.testing.assert_close(q, torch.tensor([[5 / 6, 1 / 6], [0.5, 0.5]]))
    q2 = soft_assignment(z, mu, dof=2.0)  # (1 + d^2/2)^-1.5: (1, 3^-1.5)
    row = torch.tensor([1.0, 3.0**-1.5])
    torch.testing.assert_close(q2[0], row / row.sum())
    q_random = soft_assignment(torch.randn(7, 5), torch.randn(3, 5))
    torch.testing.assert_close(q_random.sum(1), torch.ones(7))


def test_target_distribution_matches_a_hand_computation_and_sharpens() -> None:
    q = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    weight = torch.tensor([[0.64 / 1.1, 0.04 / 0.9], [0.09 / 1.1, 0.49 / 0.9]])
    p = target_distribution(q)
    torch.testing.assert_close(p, weight / weight.sum(1, keepdim=True))
    q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])  # equal cluster sizes
    p = target_distribution(q)
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    assert (p.argmax(1) == q.argmax(1)).all()
    assert (p.max(1).values > q.max(1).values).all()
    assert ((p * p.log()).sum(1) > (q * q.log()).sum(1)).all()  # lower entropy


def test_desc_recovers_planted_clusters_and_stops_once_converged() -> None:
    z, truth = _blobs()
    result = desc_cluster(z, 4, config=replace(SubtypeConfig(), epochs=50), verbose=False)
    assert nmi(truth, result.labels) >= 0.9
    assert result.labels.dtype == np.int64 and result.centroids.shape == (4, 16)
    assert result.embedding.shape == (200, 16)
    assert np.bincount(result.labels).tolist() == sorted(np.bincount(result.labels), reverse=True)
    assert result.n_epochs == 1 and result.history[0]["changed"] == 0.0  # nothing left to move


def test_auto_k_finds_the_planted_number_and_records_the_curve() -> None:
    z, _ = _blobs()
    k, curve = choose_n_subtypes(z.numpy(), n_init=5)
    assert k == 4
    assert sorted(curve) == list(range(2, 11)) and max(curve, key=curve.get) == 4


def test_auto_k_takes_the_smallest_k_within_the_tolerance_of_the_best() -> None:
    """Two groups of two near blobs each: k = 4 has the best silhouette, k = 3 and k = 2 a
    little less; the smallest k within the tolerance of the best is taken."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.0, 3.0], [8.0, 0.0], [8.0, 3.0]])
    z = np.concatenate([c + rng.normal(0.0, 0.3, (50, 2)) for c in centres])
    k, curve = choose_n_subtypes(z, range(2, 7), n_init=5)
    assert k == 4 == max(curve, key=curve.get) and curve[2] < curve[3] < curve[4]
    for tolerance, expected in (
        (curve[4] - curve[2] + 1e-6, 2),
        (curve[4] - curve[3] + 1e-6, 3),
        (curve[4] - curve[3] - 1e-6, 4),
    ):
        assert choose_n_subtypes(z, range(2, 7), n_init=5, tolerance=tolerance)[0] == expected
    assert SubtypeConfig().silhouette_tolerance == 0.01


def test_auto_k_guards_small_inputs() -> None:
    assert choose_n_subtypes(np.zeros((2, 3))) == (1, {})
    k, curve = choose_n_subtypes(np.array([[0.0], [0.1], [5.0]]))
    assert k == 2 and list(curve) == [2]  # only k < N


def test_fusion_encoder_shapes_and_a_private_encoder() -> None:
    encoder = Encoder(30)
    fusion = FusionEncoder(encoder)
    x, r = torch.rand(5, 30), torch.randn(5, 30)
    assert fusion.tokens(x, r).shape == (5, 2, 256)
    assert fusion(x, r).shape == (5, 256)
    pairs = zip(encoder.parameters(), fusion.encoder.parameters(), strict=True)
    assert all(a is not b for a, b in pairs)
    fusion.train()
    assert fusion.transformer.training
    norms = [m for m in fusion.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and not any(m.training for m in norms)


@pytest.fixture(scope="module")
def anomalies() -> tuple[acsleuth.ACsleuth, torch.Tensor, np.ndarray]:
    reference, target = acsleuth.datasets.synthetic(
        300, 300, 200, n_types=3, n_anomaly_types=3, anomaly_ratio=0.3, seed=0
    )
    model = acsleuth.ACsleuth(
        n_top_genes=200, prepare_epochs=2, train_epochs=1, device="cpu", verbose=False
    ).fit(reference)
    rows = np.flatnonzero(target.obs["is_anomaly"].to_numpy())
    x = torch.as_tensor(prepare(target, genes=model.genes_).rows(rows))
    return model, x, target.obs["cell_type"].to_numpy()[rows]


@pytest.mark.parametrize(("embedding", "width"), [("pca", 50), ("fusion", 256)])
def test_subtype_anomalies_finds_the_planted_types(anomalies, embedding, width) -> None:
    model, x, truth = anomalies
    gen = model.generator_
    config = replace(FAST, embedding=embedding)
    result = subtype_anomalies(x, generator=gen, n_subtypes=3, config=config, verbose=False)
    assert result.labels.shape == (90,) and result.labels.dtype == np.int64
    assert result.embedding.shape == (90, width) and result.embedding.dtype == np.float32
    assert result.n_subtypes == 3 and result.silhouette_curve is None
    assert 1 <= len(result.history) <= FAST.epochs
    assert nmi(truth, result.labels) > 0.6  # chance is ~0


@pytest.mark.parametrize("embedding", ["pca", "fusion"])
def test_subtype_anomalies_is_deterministic_given_the_seed(anomalies, embedding) -> None:
    model, x, _ = anomalies
    gen = model.generator_
    config = replace(FAST, epochs=2, embedding=embedding)
    runs = [
        subtype_anomalies(x, generator=gen, n_subtypes="auto", config=config, seed=3, verbose=False)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    np.testing.assert_array_equal(runs[0].embedding, runs[1].embedding)
    assert runs[0].silhouette_curve == runs[1].silhouette_curve
    assert sorted(runs[0].silhouette_curve) == list(range(2, 11))


def test_few_anomalies_make_one_subtype_and_bad_counts_are_refused() -> None:
    gen = Generator(10, n_memory=8)
    x = torch.rand(2, 10)
    result = subtype_anomalies(x, generator=gen, n_subtypes="auto", verbose=False)
    assert result.labels.tolist() == [0, 0] and result.n_subtypes == 1
    assert result.silhouette_curve == {} and result.history == []
    with pytest.raises(ValueError, match=r"integer in 1\.\.2"):
        subtype_anomalies(x, generator=gen, n_subtypes=3, verbose=False)
    with pytest.raises(ValueError, match=r"\(N >= 1, G\)"):
        subtype_anomalies(x[:0], generator=gen, verbose=False)
    with pytest.raises(ValueError, match="'pca' or 'fusion'"):
        subtype_anomalies(
            torch.rand(5, 10),
            generator=gen,
            n_subtypes=2,
            config=replace(FAST, embedding="umap"),
            verbose=False,
        )
    with pytest.raises(ValueError, match="'fusion' needs module I's generator"):
        subtype_anomalies(
            torch.rand(5, 10), n_subtypes=2, config=replace(FAST, embedding="fusion"), verbose=False
        )
