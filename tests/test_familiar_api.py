"""The scikit-learn / pyod / scvi-tools names on ACsleuth, and what a cell's MMD score depends on."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import FastACsleuth
from sklearn.base import clone

from acsleuth import datasets, tl


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(100, 80, 40, n_anomaly_types=1, anomaly_ratio=0.25, seed=4)


@pytest.fixture(scope="module")
def model(data):
    return FastACsleuth(random_state=3).fit(data[0])


def test_clone_gives_an_unfitted_model_with_the_same_settings(model) -> None:
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not twin.is_fitted and model.is_fitted
    assert twin.get_params()["random_state"] == 3


def test_set_params_checks_values_and_names(data) -> None:
    model = FastACsleuth()
    assert model.set_params(score="scaled", n_jobs=1) is model and model.params["score"] == "scaled"
    with pytest.raises(ValueError, match="score must be one of"):
        model.set_params(score="best")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epochs'\]"):
        model.set_params(epochs=3)
    assert model.params["score"] == "scaled"


def test_sklearn_signs_and_the_threshold(model, data) -> None:
    result = model.evaluate(data[1])
    assert model.threshold_ == result.threshold
    np.testing.assert_array_equal(model.score_samples(data[1]), -result.score)
    decision = model.decision_function(data[1])
    np.testing.assert_array_equal(decision <= 0, result.anomaly)
    assert result.anomaly.any() and not result.anomaly.all()


def test_latent_representation_and_embed_take_anndata(model, data) -> None:
    target = data[1].copy()
    tl.score_anomalies(target, model)
    latent = model.get_latent_representation(data[1])
    assert latent.shape == (data[1].n_obs, 256) and latent.dtype == np.float32
    np.testing.assert_allclose(latent, target.obsm["X_acsleuth"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.embed(data[1]).numpy(), latent)


def test_a_cells_mmd_score_depends_on_the_cells_scored_with_it(model, data) -> None:
    """As documented: the predictor is trained on the target it scores."""
    together = model.evaluate(data[1]).scores
    alone = model.evaluate(data[1][:40].copy()).scores
    np.testing.assert_allclose(alone["scaled"], together["scaled"][:40], rtol=1e-5)  # per cell
    assert np.abs(alone["mmd"] - together["mmd"][:40]).max() > 1e-4


def test_score_anomalies_reads_raw_or_a_layer_like_scanpy(model, data) -> None:
    expected = data[1].copy()
    tl.score_anomalies(expected, model)
    scaled = data[1].copy()
    scaled.raw = data[1].copy()
    scaled.layers["counts"] = data[1].X.copy()
    scaled.X = data[1].X.toarray() - 1.0  # scaled data: refused as X
    for kwargs in ({"use_raw": True}, {"layer": "counts"}):
        tl.score_anomalies(scaled, model, **kwargs)
        np.testing.assert_array_equal(scaled.obs["acsleuth_score"], expected.obs["acsleuth_score"])
    with pytest.raises(ValueError, match="negative"):
        tl.score_anomalies(scaled, model)
    with pytest.raises(ValueError, match="name two matrices"):
        tl.score_anomalies(scaled, model, use_raw=True, layer="counts")
