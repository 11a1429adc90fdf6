"""ACsleuth.run and the stage II-IV tools: keys written, subtypes, batches, seeds, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _helpers import FAST_RUN

from acsleuth import ACsleuth, datasets, tl
from acsleuth._anndata import batch_codes
from acsleuth.data import prepare
from acsleuth.stages.batch_scale import target_batch_scale


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(
        120, 120, 60, n_anomaly_types=2, anomaly_ratio=0.25, n_batches=2, seed=0
    )


@pytest.fixture(scope="module")
def fitted(data):
    return ACsleuth(**FAST_RUN, random_state=5).fit(data[0])


@pytest.fixture(scope="module")
def annotated(fitted, data):
    return fitted.run(data[0], data[1].copy(), batch_key="batch")


def test_run_writes_the_documented_keys(annotated, data, tmp_path) -> None:
    adata = annotated
    n = adata.n_obs
    assert (
        adata.obs["acsleuth_score"].dtype == float and adata.obs["acsleuth_anomaly"].dtype == bool
    )
    assert adata.obs["acsleuth_anomaly"].sum() == 30
    corrected = adata.layers["acsleuth_corrected"]  # the target's genes are the model's panel
    assert (
        corrected.dtype == np.float32
        and corrected.shape == (n, 60)
        and np.isfinite(corrected).all()
    )
    assert (
        adata.obsm["X_acsleuth"].shape == (n, 256) and np.isfinite(adata.obsm["X_acsleuth"]).all()
    )
    uns = adata.uns["acsleuth"]
    assert {
        "params",
        "version",
        "backend",
        "seed",
        "timings",
        "n_subtypes",
        "silhouette_curve",
    } <= set(uns)
    assert {"module I", "kin", "style", "subtype"} <= set(uns["timings"]) and uns["seed"] == 5
    assert all(isinstance(k, str) for k in uns["silhouette_curve"]) and uns["silhouette_curve"]
    assert (adata.X != data[1].X).nnz == 0  # expression untouched
    adata.write_h5ad(tmp_path / "annotated.h5ad")  # every key is h5ad-serialisable


def test_subtypes_and_their_embedding_cover_only_the_anomalies(annotated) -> None:
    anomaly = annotated.obs["acsleuth_anomaly"].to_numpy()
    subtype = annotated.obs["acsleuth_subtype"]
    assert isinstance(subtype.dtype, pd.CategoricalDtype)
    assert list(subtype.cat.categories) == [
        str(k) for k in range(annotated.uns["acsleuth"]["n_subtypes"])
    ]
    np.testing.assert_array_equal(subtype.isna().to_numpy(), ~anomaly)
    embedding = annotated.obsm["X_acsleuth_subtype"]
    assert embedding.shape == (annotated.n_obs, 30)  # principal components, the default
    assert np.isfinite(embedding[anomaly]).all() and np.isnan(embedding[~anomaly]).all()


def test_anomalies_get_their_batch_mean_correction(fitted, data, annotated) -> None:
    source = prepare(data[1], genes=fitted.genes_)
    codes, _ = batch_codes(data[1], "batch")
    scale = target_batch_scale(fitted.neighbours_, source, codes, fitted.settings, fitted.device)
    x = source.with_batch_scale(scale, codes).rows(np.arange(data[1].n_obs))  # the start
    delta = annotated.layers["acsleuth_corrected"] - x
    anomaly = annotated.obs["acsleuth_anomaly"].to_numpy()
    batch = annotated.obs["batch"].to_numpy()
    for name in np.unique(batch):
        normal = (batch == name) & ~anomaly
        expected = delta[normal].mean(0)
        np.testing.assert_allclose(
            delta[(batch == name) & anomaly],
            np.broadcast_to(expected, delta[(batch == name) & anomaly].shape),
            atol=1e-4,
        )
    spec = fitted.correct(
        data[1], data[0], normal=~anomaly, batch_key="batch", anomalies="generator"
    )
    np.testing.assert_array_equal(spec[~anomaly], annotated.layers["acsleuth_corrected"][~anomaly])
    assert not np.allclose(spec[anomaly], annotated.layers["acsleuth_corrected"][anomaly])
    with pytest.raises(ValueError, match="'shift' or 'generator'"):
        fitted.correct(data[1], data[0], normal=~anomaly, anomalies="mean")


def test_correct_streams_into_an_h5py_dataset(fitted, data, annotated, tmp_path) -> None:
    import h5py

    anomaly = annotated.obs["acsleuth_anomaly"].to_numpy()
    with h5py.File(tmp_path / "corrected.h5", "w") as f:
        sink = f.create_dataset("x", shape=(data[1].n_obs, 60), dtype="f4", chunks=(16, 60))
        assert (
            fitted.correct(data[1], data[0], normal=~anomaly, batch_key="batch", out=sink) is sink
        )
        np.testing.assert_array_equal(sink[:], annotated.layers["acsleuth_corrected"])
    with pytest.raises(ValueError, match="out has shape"):
        fitted.correct(data[1], data[0], normal=~anomaly, out=np.zeros((3, 60), np.float32))


def test_correct_refuses_when_fewer_than_two_cells_are_normal(fitted, data) -> None:
    n = data[1].n_obs
    for normal in (np.zeros(n, bool), np.eye(1, n, 3, dtype=bool)[0]):
        with pytest.raises(
            ValueError, match=f"{int(normal.sum())} of {n} target cells are called normal"
        ):
            fitted.correct(data[1], data[0], normal=normal, batch_key="batch")


def test_same_seed_gives_the_same_outputs(fitted, data, annotated) -> None:
    again = fitted.run(data[0], data[1].copy(), batch_key="batch")
    np.testing.assert_array_equal(
        again.layers["acsleuth_corrected"], annotated.layers["acsleuth_corrected"]
    )
    np.testing.assert_array_equal(
        again.obsm["X_acsleuth_subtype"], annotated.obsm["X_acsleuth_subtype"]
    )
    pd.testing.assert_series_equal(again.obs["acsleuth_subtype"], annotated.obs["acsleuth_subtype"])


def test_tools_reproduce_run(fitted, data, annotated) -> None:
    target = data[1].copy()
    tl.score_anomalies(target, fitted, batch_key="batch")
    out = tl.correct_batches(target, fitted, reference=data[0], batch_key="batch", copy=True)
    assert "acsleuth_corrected" not in target.layers
    assert tl.subtype_anomalies(out, fitted, n_subtypes=2) is None
    np.testing.assert_array_equal(
        out.layers["acsleuth_corrected"], annotated.layers["acsleuth_corrected"]
    )
    assert out.uns["acsleuth"]["n_subtypes"] == 2 and out.uns["acsleuth"]["silhouette_curve"] == {}
    assert {"kin", "style", "subtype"} <= set(out.uns["acsleuth"]["timings"])


@pytest.mark.parametrize("tool", [tl.subtype_anomalies, tl.correct_batches])
def test_tools_say_what_to_run_first(fitted, data, tool) -> None:
    kwargs = {"reference": data[0]} if tool is tl.correct_batches else {}
    with pytest.raises(KeyError, match="score_anomalies"):
        tool(data[1].copy(), fitted, key_added="ac", **kwargs)


def test_single_batch_and_other_gene_order_go_to_obsm(fitted, data) -> None:
    target = data[1][:, ::-1].copy()  # the model's genes, reversed
    fitted.run(data[0], target, n_subtypes=2, key_added="ac")
    corrected = target.obsm["ac_corrected"]
    assert "ac_corrected" not in target.layers and corrected.shape == (target.n_obs, 60)
    assert target.uns["ac"]["n_subtypes"] == 2


def test_uncorrected_run_skips_the_style_transfer(fitted, data) -> None:
    target = fitted.run(data[0], data[1].copy(), correct=False, n_subtypes=3)
    assert "acsleuth_corrected" not in target.layers and "acsleuth_corrected" not in target.obsm
    assert "style" not in target.uns["acsleuth"]["timings"]
    assert target.obs["acsleuth_subtype"].notna().sum() == 30


def test_anomaly_ratio_override_is_for_one_call(fitted, data) -> None:
    target = fitted.run(data[0], data[1].copy(), anomaly_ratio=0.02, correct=False)
    assert target.obs["acsleuth_anomaly"].sum() == 2  # 1-2 anomalies: a single subtype
    assert (
        target.uns["acsleuth"]["n_subtypes"] == 1
        and target.uns["acsleuth"]["params"]["anomaly_ratio"] == 0.02
    )
    assert fitted.params["anomaly_ratio"] == 0.25
    target = fitted.run(data[0], data[1].copy(), anomaly_ratio=0.001, correct=False)
    assert not target.obs["acsleuth_anomaly"].any() and target.obs["acsleuth_subtype"].isna().all()
    assert target.uns["acsleuth"]["n_subtypes"] == 0


def test_missing_batch_key_is_a_clear_error(fitted, data) -> None:
    with pytest.raises(KeyError, match="batch_key 'sample' is not an obs column"):
        fitted.run(data[0], data[1].copy(), batch_key="sample")


def test_run_fits_an_unfitted_model_and_it_saves_and_loads(data, tmp_path) -> None:
    model = ACsleuth(**FAST_RUN)
    target = model.run(data[0], data[1].copy(), kin="learned", batch_key="batch")
    assert model.is_fitted and np.isfinite(target.layers["acsleuth_corrected"]).all()
    loaded = ACsleuth.load(model.save(tmp_path / "model"))
    assert loaded.params == model.params and loaded.params["style_epochs"] == 1
    np.testing.assert_array_equal(loaded.score(data[1]), model.score(data[1]))


@pytest.mark.parametrize(
    ("name", "value"), [("kin_epochs", -1), ("style_epochs", -1), ("subtype_epochs", -2)]
)
def test_stage_epochs_are_validated(name, value) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        ACsleuth(**{**FAST_RUN, name: value})
