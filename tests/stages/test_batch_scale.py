"""Each target batch's per-gene scale against the reference: estimated, divided out as rows are
read, kept by the fitted model and carried to the batch correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import FastACsleuth
from anndata import AnnData

from acsleuth import datasets, metrics
from acsleuth.data import prepare
from acsleuth.stages.batch_scale import batch_gene_scale, batch_gene_scales
from acsleuth.stages.neighbours import (
    NeighbourConfig,
    ReferenceNeighbours,
    fit_neighbours,
    principal_axes,
)


def _log_expression(n: int, centres: np.ndarray, types: list[int], rng) -> np.ndarray:
    """Log-normalised Poisson counts of cells drawn from the types ``types`` of ``centres``."""
    means = np.exp(centres[rng.choice(types, n)])
    return np.log1p(rng.poisson(means)).astype(np.float32)


def test_a_planted_per_gene_scale_is_recovered_and_its_batch_returns_to_the_reference() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(1.0, 1.0, size=(4, 60))
    reference = _log_expression(400, centres, [0, 1, 2], rng)
    normal = _log_expression(240, centres, [0, 1, 2], rng)
    anomalous = _log_expression(60, centres, [3], rng)
    target = np.concatenate([normal, anomalous])
    planted = rng.normal(0.0, 1.0, size=60).astype(np.float32)
    scaled = np.log1p(np.expm1(target) * np.exp(planted)).astype(np.float32)
    mean, components = principal_axes(torch.from_numpy(reference), 10)
    profile = torch.from_numpy(reference)

    estimate = batch_gene_scale(torch.from_numpy(scaled), profile, mean, components, 5).numpy()
    assert np.corrcoef(estimate, planted)[0, 1] > 0.95
    assert np.abs(estimate - planted).mean() < 0.25
    unscaled = batch_gene_scale(torch.from_numpy(target), profile, mean, components, 5).numpy()
    assert np.abs(unscaled).mean() < 0.1  # a batch like the reference keeps its expression

    corrected = np.log1p(np.expm1(scaled) * np.exp(-estimate)).astype(np.float32)
    assert not corrected[scaled == 0].any()  # zeros stay zeros
    neighbours = fit_neighbours(
        lambda rows: reference[rows], 400, NeighbourConfig(n_components=10, k=5), seed=0
    )
    truth = np.r_[np.zeros(240, bool), np.ones(60, bool)]
    before = metrics.auroc(truth, neighbours.distances(torch.from_numpy(scaled)).mean(0).numpy())
    after = metrics.auroc(truth, neighbours.distances(torch.from_numpy(corrected)).mean(0).numpy())
    assert after > before + 0.05 and after > 0.95

    # over the folds' axes and shrunk by split-half agreement: an unscaled batch stays put
    both = torch.from_numpy(np.concatenate([target, scaled]))
    codes = np.repeat([0, 1], 300)
    scales = batch_gene_scales(neighbours, both, codes, 2, seed=0).numpy()
    assert np.abs(scales[0]).mean() < 0.5 * np.abs(unscaled).mean()
    assert np.corrcoef(scales[1], planted)[0, 1] > 0.95
    assert np.abs(scales[1] - planted).mean() < 0.25
    neighbours.profile = None
    with pytest.raises(ValueError, match="keeps no reference profile"):
        batch_gene_scales(neighbours, both, codes, 2, seed=0)


def test_rows_are_read_with_their_batch_scale_divided_out() -> None:
    rng = np.random.default_rng(1)
    x = np.log1p(rng.poisson(2.0, size=(6, 4))).astype(np.float32)
    source = prepare(AnnData(x.copy()))
    scales = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 0.0]], dtype=np.float32)
    codes = np.array([0, 1, 0, 1, 1, 0])
    rescaled = source.with_batch_scale(scales, codes)
    expected = np.log1p(np.expm1(x) * np.exp(-scales[codes]))
    np.testing.assert_allclose(rescaled.rows(slice(None)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rescaled.rows(np.array([4, 1])), expected[[4, 1]], rtol=1e-5)
    np.testing.assert_array_equal(source.rows(slice(None)), x)  # the original source is unchanged
    np.testing.assert_array_equal(rescaled.with_genes(source.genes).rows(slice(None)), x)
    with pytest.raises(ValueError, match=r"scales must be \(batches, 4\) and codes \(6,\)"):
        source.with_batch_scale(scales[:, :3], codes)
    with pytest.raises(ValueError, match="codes"):
        source.with_batch_scale(scales, codes[:5])


@pytest.fixture(scope="module")
def two_batches():
    """A fitted model, its reference and a target of two batches, the second with per-gene
    effects of sd 1.5 (``target_0`` shares the reference's style)."""
    reference, target = datasets.synthetic(
        240, 300, 150, anomaly_ratio=0.25, n_batches=2, batch_effect=1.5, seed=4
    )
    model = FastACsleuth(score_epochs=1, warm_epochs=1).fit(reference)
    return model, reference, target


def test_the_model_keeps_a_profile_and_measures_the_distance_after_dividing_it_out(
    two_batches, monkeypatch
) -> None:
    model, _, target = two_batches
    profile = model.neighbours_.profile
    assert profile.dtype == torch.float16 and profile.shape == (240, len(model.genes_))
    saved = ReferenceNeighbours.from_state_dict(model.neighbours_.state_dict())
    assert torch.equal(saved.profile, profile)

    scaled = model.evaluate(target, batch_key="batch")
    table = scaled.batch_scale
    assert list(table.index) == list(target.obs["batch"].cat.categories)
    assert list(table.columns) == list(model.genes_)
    assert scaled.timings["batch scale"] >= 0
    spread = np.abs(table.to_numpy()).mean(1)
    assert spread[1] > 3 * spread[0]
    # the distance measured exactly the expression with each batch's scale divided out
    codes = target.obs["batch"].cat.codes.to_numpy()
    x = prepare(target, genes=model.genes_).rows(slice(None))
    divided = np.log1p(np.expm1(x) * np.exp(-table.to_numpy()[codes])).astype(np.float32)
    by_hand = AnnData(divided, obs=target.obs.copy())
    by_hand.var_names = model.genes_
    monkeypatch.setitem(model.params, "batch_scale", False)
    shifted = model.evaluate(by_hand, batch_key="batch")
    assert shifted.batch_scale is None
    np.testing.assert_allclose(shifted.scores["knn"], scaled.scores["knn"], rtol=1e-4)
    unscaled = model.evaluate(target, batch_key="batch")
    assert not np.allclose(unscaled.scores["knn"], scaled.scores["knn"], rtol=1e-2)
    # the residuals and the count without a ratio read the expression as given
    np.testing.assert_array_equal(unscaled.scores["scaled"], scaled.scores["scaled"])
    assert unscaled.anomaly.sum() == scaled.anomaly.sum()
    monkeypatch.setitem(model.params, "batch_scale", True)
    assert model.evaluate(target).batch_scale is None  # one batch: nothing to divide out
    older = ReferenceNeighbours(model.neighbours_.folds, model.neighbours_.k)
    monkeypatch.setattr(model, "neighbours_", older)  # as saved before the profile existed
    assert model.evaluate(target, batch_key="batch").batch_scale is None


@pytest.fixture
def estimates(monkeypatch) -> list[np.ndarray]:
    """Every per-gene scale estimated while the test runs, in order."""
    from acsleuth.stages import batch_scale

    made = []
    estimate = batch_scale.target_batch_scale

    def recording(*args):
        made.append(estimate(*args))
        return made[-1]

    monkeypatch.setattr(batch_scale, "target_batch_scale", recording)
    return made


def test_the_correction_divides_out_the_scale_scoring_estimated(
    two_batches, estimates, monkeypatch
) -> None:
    model, reference, target = two_batches
    scored = model.evaluate(target, batch_key="batch")
    assert len(estimates) == 1
    normal = ~scored.anomaly
    scaled = model.correct(target, reference, normal=normal, batch_key="batch")
    np.testing.assert_array_equal(estimates[1], scored.batch_scale)
    given = model.correct(
        target, reference, normal=normal, batch_key="batch", batch_scale=scored.batch_scale
    )
    assert len(estimates) == 2  # a scale passed in is used, not estimated again
    np.testing.assert_array_equal(given, scaled)
    halved = model.correct(
        target, reference, normal=normal, batch_key="batch", batch_scale=scored.batch_scale / 2
    )
    assert len(estimates) == 2 and not np.allclose(halved, scaled, atol=1e-2)
    reordered = scored.batch_scale.iloc[::-1, ::-1]  # rows and genes are matched by name
    by_name = model.correct(
        target, reference, normal=normal, batch_key="batch", batch_scale=reordered
    )
    np.testing.assert_array_equal(by_name, scaled)
    with pytest.raises(ValueError, match="no batch"):
        model.correct(
            target, reference, normal=normal, batch_key="batch", batch_scale=reordered.iloc[:1]
        )
    monkeypatch.setitem(model.params, "batch_scale", False)
    unscaled = model.correct(target, reference, normal=normal, batch_key="batch")
    assert len(estimates) == 2 and not np.allclose(scaled, unscaled, atol=1e-2)
    one_batch = model.correct(target, reference, normal=normal)  # a scale needs batches
    ignored = model.correct(target, reference, normal=normal, batch_scale=scored.batch_scale)
    np.testing.assert_array_equal(ignored, one_batch)


def test_run_estimates_the_scale_once_and_corrects_with_it(two_batches, estimates) -> None:
    model, reference, target = two_batches
    annotated = model.run(reference, target.copy(), batch_key="batch", n_subtypes=2)
    assert len(estimates) == 1
    written = annotated.uns["acsleuth"]["batch_scale"]  # batches x genes, for the user
    np.testing.assert_array_equal(written.loc[["target_0", "target_1"]].to_numpy(), estimates[0])
    normal = ~annotated.obs["acsleuth_anomaly"].to_numpy(bool)
    again = model.correct(target, reference, normal=normal, batch_key="batch")
    assert len(estimates) == 2
    np.testing.assert_array_equal(estimates[1], estimates[0])
    np.testing.assert_array_equal(np.asarray(annotated.layers["acsleuth_corrected"]), again)


def test_with_a_scale_the_count_reads_a_sample_of_each_large_batch(
    two_batches, monkeypatch
) -> None:
    """Batches larger than the median sample: the distance still covers every cell, and the
    count, read from the sample, is scaled back to the batches' sizes."""
    from acsleuth.stages import batch_scale, score

    model, _, target = two_batches
    full = model.evaluate(target, batch_key="batch")
    drawn = score.median_sample

    def small(codes, *, cap=60, seed=0):
        return drawn(codes, cap=cap, seed=seed)

    codes = target.obs["batch"].cat.codes.to_numpy()
    assert batch_scale.counted_rows(codes, full.batch_scale, model.settings) is None  # whole
    for module in (score, batch_scale):
        monkeypatch.setattr(module, "median_sample", small)
    counted = batch_scale.counted_rows(codes, full.batch_scale, model.settings)
    assert counted.size == 120 and np.array_equal(counted, np.sort(counted))
    assert batch_scale.counted_rows(codes, None, model.settings) is None
    sampled = model.evaluate(target, batch_key="batch")
    np.testing.assert_array_equal(sampled.scores["knn"], full.scores["knn"])
    assert abs(int(sampled.anomaly.sum()) - int(full.anomaly.sum())) <= 0.1 * target.n_obs
