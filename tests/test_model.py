"""ACsleuth: fit / score / predict / save / load, the scanpy-style tool and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import FAST

from acsleuth import ACsleuth, datasets, metrics, tl
from acsleuth.data import DataError


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(96, 80, 60, anomaly_ratio=0.25, seed=3)


@pytest.fixture(scope="module")
def fitted(data):
    return ACsleuth(**FAST, random_state=7).fit(data[0])


def test_score_has_one_finite_value_per_target_cell(fitted, data) -> None:
    target = data[1]
    scores = fitted.score(target)
    assert scores.shape == (target.n_obs,) and np.isfinite(scores).all()
    result = fitted.evaluate(target)
    assert set(result.scores) == {
        "ensemble",
        "mmd",
        "knn",
        "scaled",
        "residual",
        "cosine",
        "critic",
    }
    assert result.embedding.shape == (target.n_obs, 256)
    np.testing.assert_array_equal(result.score, scores)


def test_same_seed_gives_same_scores_and_another_seed_does_not(fitted, data) -> None:
    reference, target = data
    again = ACsleuth(**FAST, random_state=7).fit(reference)
    np.testing.assert_array_equal(again.score(target), fitted.score(target))
    other = ACsleuth(**FAST, random_state=8).fit(reference)
    assert not np.array_equal(other.score(target), fitted.score(target))


def test_save_load_gives_identical_scores(fitted, data, tmp_path) -> None:
    path = fitted.save(tmp_path / "model")
    loaded = ACsleuth.load(path)
    assert loaded.genes_ == fitted.genes_ and loaded.params == fitted.params
    for score in ("ensemble", "mmd", "knn", "scaled", "critic"):
        np.testing.assert_array_equal(
            loaded.evaluate(data[1], score=score).score, fitted.evaluate(data[1], score=score).score
        )


def test_save_refuses_to_overwrite_unless_asked(fitted, tmp_path) -> None:
    path = fitted.save(tmp_path / "model")
    (path / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(path)
    assert (path / "keep.txt").read_text() == "user file"
    fitted.save(path, overwrite=True)
    assert not (path / "keep.txt").exists() and ACsleuth.load(path).is_fitted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind


def test_load_rejects_a_folder_that_is_not_a_model(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a saved ACsleuth model"):
        ACsleuth.load(tmp_path)


def test_predict_with_a_ratio_calls_that_many_cells(data) -> None:
    model = ACsleuth(**FAST, score="scaled", anomaly_ratio=0.2).fit(data[0])
    calls = model.predict(data[1])
    assert calls.dtype == bool and calls.sum() == round(0.2 * data[1].n_obs)


def test_scores_backed_anndata_like_in_memory(fitted, data, tmp_path) -> None:
    import anndata as ad

    target = data[1]
    target.write_h5ad(tmp_path / "target.h5ad")
    backed = ad.read_h5ad(tmp_path / "target.h5ad", backed="r")
    np.testing.assert_allclose(fitted.score(backed), fitted.score(target), rtol=1e-5, atol=1e-6)


def test_score_anomalies_writes_the_documented_keys(fitted, data) -> None:
    target = data[1].copy()
    before = target.X.copy()
    assert tl.score_anomalies(target, fitted, key_added="ac") is None
    assert target.obs["ac_score"].dtype == float and target.obs["ac_anomaly"].dtype == bool
    assert target.obsm["X_ac"].shape == (target.n_obs, 256)
    assert list(target.obsm["ac_scores"].columns) == [
        "residual",
        "scaled",
        "cosine",
        "critic",
        "mmd",
        "knn",
        "ensemble",
    ]
    uns = target.uns["ac"]
    assert {"params", "score", "threshold", "version", "backend", "seed", "timings"} <= set(uns)
    assert uns["seed"] == 7 and "module I" in uns["timings"]
    assert (target.X != before).nnz == 0  # expression untouched


def test_score_anomalies_copy_leaves_the_input_alone(fitted, data) -> None:
    target = data[1]
    out = tl.score_anomalies(target, fitted, copy=True)
    assert "acsleuth_score" in out.obs and "acsleuth_score" not in target.obs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score": "best"}, "score must be one of"),
        ({"anomaly_ratio": 1.5}, "anomaly_ratio must be in"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"prepare_epochs": -1}, "prepare_epochs must be >= 0"),
        ({"kernel": "rbf"}, "kernel must be"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ACsleuth(**{**FAST, **kwargs})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        ACsleuth(**{**FAST, "device": "cuda"})


def test_scoring_before_fit_says_what_to_do(data) -> None:
    with pytest.raises(RuntimeError, match=r"call fit\(reference\)"):
        ACsleuth(**FAST).score(data[1])


def test_target_without_shared_genes_is_an_error(fitted, data) -> None:
    target = data[1].copy()
    target.var_names = [f"other_{i}" for i in range(target.n_vars)]
    with pytest.raises(DataError, match="target"):
        fitted.score(target)


def test_reference_with_nan_is_an_error(data) -> None:
    reference = data[0].copy()
    reference.X = reference.X.toarray()
    reference.X[0, :3] = np.nan
    with pytest.raises(DataError, match="1 cell"):
        ACsleuth(**FAST).fit(reference)


def test_mmd_score_needs_four_target_cells(fitted, data) -> None:
    with pytest.raises(ValueError, match="at least 4 target"):
        fitted.score(data[1][:3].copy())
    assert fitted.evaluate(data[1][:3].copy(), score="scaled").score.shape == (3,)


def test_mixture_calls_pick_the_top_component() -> None:
    from acsleuth.stages.score import mixture_calls

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0, 0.3, 200), rng.normal(3, 0.3, 100), rng.normal(8, 0.3, 40)]
    )
    calls = mixture_calls(values, 3)
    assert calls[-40:].all() and not calls[:-40].any()
    assert not mixture_calls(np.ones(10), 2).any()  # no spread: nothing called


def test_embed_equals_the_reconstruction_embedding_on_any_rows(fitted, data) -> None:
    from acsleuth.data import prepare

    source = prepare(data[1], genes=fitted.genes_)
    full = fitted.reconstruct(source)[2]
    rows = np.array([0, 3, 7, 40])
    np.testing.assert_allclose(fitted.embed(source, rows).numpy(), full[rows], rtol=1e-5, atol=1e-6)
    assert fitted.embed(source).shape == full.shape


def test_bf16_autocast_scores_like_fp32(data) -> None:
    reference, target = data
    truth = target.obs["is_anomaly"].to_numpy()
    fp32 = ACsleuth(**FAST, random_state=7, precision="fp32").fit(reference)
    fp32 = fp32.evaluate(target, score="scaled")
    model = ACsleuth(**FAST, random_state=7, precision="bf16").fit(reference)
    bf16 = model.evaluate(target, score="scaled")
    assert (
        np.isfinite(bf16.score).all()
        and model.generator_.encoder.net[0][0].weight.dtype == torch.float32
    )
    assert not np.array_equal(bf16.score, fp32.score)  # autocast was on
    assert abs(metrics.auroc(truth, bf16.score) - metrics.auroc(truth, fp32.score)) < 0.05
    with pytest.raises(ValueError, match="precision"):
        ACsleuth(precision="fp16")
