"""ACE's solver and scores on toys whose answer is known (docs/method.md §8.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from acsleuth.nn.neural_kmeans import NeuralKMeans
from acsleuth.stages import explain as ace


def _one_gene_toy(n: int = 40, genes: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two groups that differ in gene 0 only (0 vs 3); the other genes are the same noise."""
    rng = np.random.default_rng(seed)
    codes = np.repeat([0, 1], n // 2)
    x = rng.normal(0.0, 0.3, (n, genes)).astype(np.float32)
    x[:, 0] = np.where(codes == 0, 0.0, 3.0) + rng.normal(0, 0.2, n)
    return x, codes


def _identity_model(x: np.ndarray, codes: np.ndarray, beta: float = 1.0) -> nn.Module:
    centroids = ace.group_centroids(x, codes, 2)
    centroids[:, 1:] = 0.0  # separated by gene 0 alone
    return ace.cluster_model(nn.Identity(), NeuralKMeans(torch.as_tensor(centroids), beta))


def test_identity_embedding_split_by_one_gene_moves_that_gene_only_and_every_cell_flips() -> None:
    x, codes = _one_gene_toy()
    out = ace.explain(x, codes, _identity_model(x, codes), config=ace.ExplainConfig(lam=4.0))
    for result in out.values():
        assert result.flipped == 1.0
        assert result.score[0] > 0 and np.all(result.score[1:] == 0.0)  # exact zeros
        assert result.order[0] == 0


def test_direction_marks_a_gene_enriched_in_the_group_as_negative_delta() -> None:
    x, codes = _one_gene_toy()
    out = ace.explain(x, codes, _identity_model(x, codes))
    assert out[1].mean_delta[0] < 0 and out[1].direction[0] == 1  # gene 0 is high in group 1
    assert out[0].mean_delta[0] > 0 and out[0].direction[0] == -1  # and low in group 0


def test_one_vs_rest_margin_uses_the_largest_other_logit() -> None:
    logits = torch.tensor([[2.0, 0.5, 1.5, -3.0], [0.0, 4.0, 1.0, 2.0]])
    torch.testing.assert_close(ace.margin(logits, 0, None), torch.tensor([0.5, -4.0]))
    torch.testing.assert_close(ace.margin(logits, 0, 3), torch.tensor([5.0, -2.0]))


def test_one_vs_rest_moves_cells_to_the_nearest_other_group_not_the_first() -> None:
    # three groups on a line at genes (0, 0), (4, 0), (0, 4): group 0 cells near (1, 0)
    # leave through gene 0 (towards group 1); in one-vs-one towards group 2, through gene 1
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    codes = np.repeat([0, 1, 2], 20)
    x = (centres[codes] + rng.normal(0, 0.2, (60, 2))).astype(np.float32)
    x[codes == 0, 0] += 1.0
    model = ace.cluster_model(
        nn.Identity(), NeuralKMeans(torch.as_tensor(centres, dtype=torch.float32))
    )
    rest = ace.explain(x, codes, model, groups=[0])[0]
    one = ace.explain(x, codes, model, groups=[0], mode="one_vs_one", reference=2)[0]
    assert rest.order[0] == 0 and rest.score[1] < rest.score[0] / 10
    assert one.order[0] == 1 and one.flipped == 1.0


def test_solver_is_deterministic_and_samples_at_most_max_cells() -> None:
    x, codes = _one_gene_toy(n=60)
    x[:, 1:] += np.linspace(0, 1, 60)[:, None].astype(np.float32)
    model = ace.cluster_model(
        ace.pca_embedding(x, 3), NeuralKMeans(torch.zeros(2, 3) + torch.tensor([[1.0], [-1.0]]))
    )
    config = ace.ExplainConfig(max_cells=10)
    first, second = (
        ace.explain(x, codes, model, config=config),
        ace.explain(x, codes, model, config=config),
    )
    for k in first:
        assert first[k].n_cells == 10
        np.testing.assert_array_equal(first[k].score, second[k].score)


def test_mode_and_reference_are_checked() -> None:
    x, codes = _one_gene_toy()
    with pytest.raises(ValueError, match="one_vs_rest"):
        ace.explain(x, codes, _identity_model(x, codes), mode="pairs")
    with pytest.raises(ValueError, match="reference"):
        ace.explain(x, codes, _identity_model(x, codes), mode="one_vs_one")


def test_fitted_embedding_reproduces_pca() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)) @ rng.normal(size=(8, 8))
    pca = ace.pca_embedding(x.astype(np.float32), 3)
    z = pca(torch.as_tensor(x, dtype=torch.float32)).double().numpy() + 5.0
    mapping, r2 = ace.fitted_embedding(x, z)
    assert r2 > 0.999999
    np.testing.assert_allclose(
        mapping(torch.as_tensor(x, dtype=torch.float32)).numpy(), z, atol=1e-3
    )


def _pair_distances(z: np.ndarray) -> np.ndarray:
    return ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)


def _embedded(mapping: nn.Module, x: np.ndarray) -> np.ndarray:
    return mapping(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def test_whitened_embedding_scales_by_hand() -> None:
    # two uncorrelated genes with variances exactly 4 and 1/4 (sample variance, ddof=1)
    a = np.array([1.0, -1.0, 1.0, -1.0])
    b = np.array([1.0, 1.0, -1.0, -1.0])
    x = np.stack([a * 2 * np.sqrt(3 / 4), b * 0.5 * np.sqrt(3 / 4)], 1)
    raw = _pair_distances(x)
    # floor at the largest gene variance (4): nothing is whitened, every gene scaled by 1/2
    np.testing.assert_allclose(
        _pair_distances(_embedded(ace.whitened_embedding(x, 1.0), x)), raw / 4, rtol=1e-5
    )
    # floor at the smallest (1/4): fully whitened, gene 0 scaled by 1/2 and gene 1 by 2
    scaled = x * np.array([0.5, 2.0])
    np.testing.assert_allclose(
        _pair_distances(_embedded(ace.whitened_embedding(x, 0.0), x)),
        _pair_distances(scaled),
        rtol=1e-5,
    )


@pytest.mark.parametrize(("cells", "genes"), [(60, 6), (12, 20)])
def test_whitened_distances_are_mahalanobis_with_floored_eigenvalues(cells, genes) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(cells, genes)) @ rng.normal(size=(genes, genes))
    x[:, 0] *= 0.05  # a low-variance gene: below the floor, not amplified
    covariance = np.cov(x.T)
    tau = np.quantile(np.diag(covariance), 0.5)
    eigenvalues, vectors = np.linalg.eigh(covariance)
    precision = vectors @ np.diag(1.0 / np.maximum(eigenvalues, tau)) @ vectors.T
    diff = x[:, None, :] - x[None, :, :]
    slow = np.einsum("ijg,gh,ijh->ij", diff, precision, diff)
    fast = _pair_distances(_embedded(ace.whitened_embedding(x, 0.5), x))
    np.testing.assert_allclose(fast, slow, rtol=1e-3, atol=1e-3 * slow.max())


def test_whitened_embedding_rejects_a_bad_floor_and_constant_genes() -> None:
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=r"whiten_floor must be in \[0, 1\], got 1.5"):
        ace.whitened_embedding(x, 1.5)
    x[:, 1:] = 3.0
    with pytest.raises(ValueError, match="constant in more than a whiten_floor fraction"):
        ace.whitened_embedding(x, 0.5)


def test_whitened_embedding_ranks_causal_genes_over_the_genes_that_sum_them() -> None:
    # ACE's simulation: dependent genes are noisy weighted sums of causal genes; in plain
    # principal components they carry the largest loadings and ACE moves them instead
    from acsleuth.datasets import causal_panels

    adata = causal_panels(200, 4, n_causal=8, n_dependent=40, n_noise=20, seed=0)
    x, codes = adata.X, adata.obs["group"].cat.codes.to_numpy()
    causal = set(np.flatnonzero((adata.var["role"] == "causal").to_numpy()))
    config = ace.ExplainConfig(max_iter=100, max_cells=40)
    hits = {}
    for name, mapping in (
        ("whitened", ace.whitened_embedding(x)),
        ("pca", ace.pca_embedding(x, 10)),
    ):
        z = _embedded(mapping, x)
        head = ace.kmeans_head(z, codes, ace.group_centroids(z, codes, 4), config.beta)
        found = ace.explain(x, codes, ace.cluster_model(mapping, head), config=config)
        hits[name] = [len(causal & set(r.order[:8])) for r in found.values()]
    assert min(hits["whitened"]) >= 4  # of 8; random top-8s of 68 genes hold ~1
    assert all(w > p for w, p in zip(hits["whitened"], hits["pca"], strict=True))


def test_fused_order_is_the_reciprocal_rank_fusion_by_hand() -> None:
    # nearest-group panel ranks genes 0, 1, 2, 3; the complement panel 3, 2, 1, 0
    found = ace.GroupExplanation(
        score=np.array([4.0, 3.0, 2.0, 1.0]),
        mean_delta=np.zeros(4),
        saliency=np.zeros(4),
        flipped=1.0,
        l1=1.0,
        n_cells=1,
        n_iter=1,
        pooled_order=np.array([3, 2, 1, 0]),
        fusion_k=1.0,
    )
    # ranks from 1: gene 0 (1, 4), gene 1 (2, 3), gene 2 (3, 2), gene 3 (4, 1)
    expected = np.array([1 / 2 + 1 / 5, 1 / 3 + 1 / 4, 1 / 4 + 1 / 3, 1 / 5 + 1 / 2])
    np.testing.assert_allclose(found.ranking_score, expected)
    # genes 0 and 3 tie, and 1 and 2: the nearest-group rank breaks the ties
    np.testing.assert_array_equal(found.order, [0, 3, 1, 2])
    found.fusion_k = 100.0  # a large constant: the ranks matter less, the ties stay
    np.testing.assert_array_equal(found.order, [0, 3, 1, 2])
    found.pooled_order = np.array([1, 0, 2, 3])
    np.testing.assert_array_equal(found.order, [0, 1, 2, 3])
    found.pooled_order = None
    np.testing.assert_array_equal(found.order, [0, 1, 2, 3])
    np.testing.assert_array_equal(found.ranking_score, found.score)


def test_complement_panel_leads_with_the_gene_that_separates_the_group_from_all_others() -> None:
    # group 0 near (1, 0, 0): its nearest group (1, at (4, 0, 0)) is left through gene 0, but
    # the rest pooled lies at (2, 2, 0), so against its complement gene 1 separates it most
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    codes = np.repeat([0, 1, 2], 20)
    x = (centres[codes] + rng.normal(0, 0.2, (60, 3))).astype(np.float32)
    x[codes == 0, 0] += 1.0
    model = ace.cluster_model(
        nn.Identity(), NeuralKMeans(torch.as_tensor(centres, dtype=torch.float32))
    )

    def complement(k: int) -> nn.Module:
        return ace.complement_model(nn.Identity(), x, codes, k, 1.0)

    fused = ace.explain(x, codes, model, groups=[0], complement=complement)[0]
    assert fused.nearest_order[0] == 0 and fused.pooled_order[0] == 1
    inside = x[codes == 0].mean(0) - x[codes != 0].mean(0)  # both genes lower in group 0
    np.testing.assert_array_equal(fused.direction[:2], np.sign(inside[:2]))
    nearest = ace.explain(
        x,
        codes,
        model,
        groups=[0],
        complement=complement,
        config=ace.ExplainConfig(panel="nearest"),
    )[0]
    assert nearest.pooled_order is None and nearest.order[0] == 0
    one = ace.explain(
        x, codes, model, groups=[0], mode="one_vs_one", reference=2, complement=complement
    )[0]
    assert one.pooled_order is None  # the complement is a one-vs-rest panel


def test_direction_falls_back_to_the_gradient_and_then_the_complement_panel() -> None:
    found = ace.GroupExplanation(
        score=np.array([1.0, 0.0, 0.0]),
        mean_delta=np.array([-1.0, 0.0, 0.0]),  # gene 0 moved down: enriched
        saliency=np.zeros(3),
        flipped=1.0,
        l1=1.0,
        n_cells=1,
        n_iter=1,
        mean_grad=np.array([5.0, -2.0, 3.0]),
    )
    np.testing.assert_array_equal(found.signs(), [1, -1, 1])
    np.testing.assert_array_equal(found.direction, [1, -1, 1])
    found.pooled_sign = np.array([-1.0, 1.0, 0.0])  # fused: unmoved genes take its sign
    np.testing.assert_array_equal(found.direction, [1, 1, 1])
