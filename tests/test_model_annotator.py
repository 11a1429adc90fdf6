"""OpenWorldAnnotator: bad inputs, determinism, save/load, untouched inputs (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from acsleuth import datasets
from acsleuth.model.annotator import OpenWorldAnnotator
from acsleuth.train.contrastive import OpenWorldConfig

TINY = OpenWorldConfig(epochs=3, batch_size=64, estimate_every=2, kmeans_iter=5, kmeans_init=1)


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(
        160,
        160,
        60,
        n_types=3,
        n_anomaly_types=2,
        anomaly_ratio=0.3,
        proportions="long_tail",
        imbalance=5.0,
        seed=0,
    )


@pytest.fixture(scope="module")
def fitted(data):
    ref, tgt = data
    return OpenWorldAnnotator(5, config=TINY, seed=0).fit(ref, tgt, label_key="cell_type")


def test_n_types_below_reference_types_is_refused_in_one_line(data) -> None:
    ref, tgt = data
    with pytest.raises(
        ValueError, match=r"n_types=2 is below the 3 cell types of the reference"
    ) as err:
        OpenWorldAnnotator(2, config=TINY).fit(ref, tgt, label_key="cell_type")
    assert "\n" not in str(err.value)


def test_missing_label_key_is_refused(data) -> None:
    ref, tgt = data
    with pytest.raises(ValueError, match="no obs column 'celltype'"):
        OpenWorldAnnotator(5, config=TINY).fit(ref, tgt, label_key="celltype")


def test_same_seed_same_model_and_inputs_untouched(data, fitted) -> None:
    ref, tgt = data
    before = (ref.X.copy(), tgt.X.copy(), list(tgt.obs.columns), dict(tgt.obsm))
    again = OpenWorldAnnotator(5, config=TINY, seed=0).fit(ref, tgt, label_key="cell_type")
    a, b = fitted.predict(tgt), again.predict(tgt)
    np.testing.assert_array_equal(a.proba, b.proba)
    assert (ref.X != before[0]).nnz == 0 and (tgt.X != before[1]).nnz == 0
    assert list(tgt.obs.columns) == before[2] and dict(tgt.obsm) == before[3]


def test_outputs_are_consistent(data, fitted) -> None:
    _, tgt = data
    out = fitted.predict(tgt)
    assert out.proba.shape == (tgt.n_obs, 5) and out.features.shape == (tgt.n_obs, 128)
    np.testing.assert_allclose(out.proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out.confidence, out.proba.max(1))
    seen = {"type_0", "type_1", "type_2"}
    assert set(fitted.classes[:3]) == seen
    assert set(fitted.classes[3:]) == {"novel_1", "novel_2"}
    labels = np.asarray(out.label, dtype=str)
    np.testing.assert_array_equal(out.novel, ~np.isin(labels, list(seen)))
    counts = [int((labels == f"novel_{i}").sum()) for i in (1, 2)]
    assert counts[0] >= counts[1]  # novel clusters are named by decreasing size
    assert len(fitted.priors) == 2 and all(abs(p.sum() - 1) < 1e-6 for p in fitted.priors)


def test_save_load_round_trip(tmp_path, data, fitted) -> None:
    _, tgt = data
    fitted.save(tmp_path / "m")
    loaded = OpenWorldAnnotator.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(tgt).proba, fitted.predict(tgt).proba)
    assert loaded.classes == fitted.classes and loaded.config == fitted.config
    with pytest.raises(FileNotFoundError, match="holds no saved OpenWorldAnnotator"):
        OpenWorldAnnotator.load(tmp_path / "nothing")
