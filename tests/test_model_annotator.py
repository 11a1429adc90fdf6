"""OpenWorldAnnotator: bad inputs, determinism, save/load, untouched inputs (issue 19)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from acsleuth import datasets
from acsleuth.data import prepare
from acsleuth.model.annotator import META_FILE, MODEL_FILE, OpenWorldAnnotator
from acsleuth.stages import annotate as stage
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


@pytest.mark.parametrize("members", [0, -1, 1.5])
def test_a_number_of_networks_below_one_is_refused_in_one_line(members) -> None:
    with pytest.raises(ValueError, match=r"config\.members") as err:
        OpenWorldAnnotator(5, config=replace(TINY, members=members))
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
    codes = pd.Categorical(out.label, categories=fitted.classes).codes
    np.testing.assert_allclose(out.confidence, out.proba[np.arange(tgt.n_obs), codes])
    seen = {"type_0", "type_1", "type_2"}
    assert set(fitted.classes[:3]) == seen
    assert set(fitted.classes[3:]) == {"novel_1", "novel_2"}
    labels = np.asarray(out.label, dtype=str)
    np.testing.assert_array_equal(out.novel, ~np.isin(labels, list(seen)))
    counts = [int((labels == f"novel_{i}").sum()) for i in (1, 2)]
    assert counts[0] >= counts[1]  # novel clusters are named by decreasing size
    # one row of pi estimates per member (epochs 0 and 2), each summing to 1
    assert [p.shape for p in fitted.priors] == [(2, 5)] * TINY.members == [(2, 5)] * 2
    np.testing.assert_allclose(np.concatenate(fitted.priors).sum(1), 1.0, rtol=1e-6)


def test_prediction_averages_the_members_with_aligned_novel_slots(data, fitted) -> None:
    _, tgt = data
    out = fitted.predict(tgt)
    loader = fitted._loader(prepare(tgt, genes=fitted.genes, name="target"), train=False, seed=0)
    members = [stage.predict(net, loader, TINY.student_temperature) for net in fitted.nets]
    # seen columns stay; the second member's novel slots are a permutation of 3, 4
    np.testing.assert_array_equal(fitted.slot_orders[0], np.arange(5))
    np.testing.assert_array_equal(fitted.slot_orders[1][:3], np.arange(3))
    assert sorted(fitted.slot_orders[1][3:]) == [3, 4]
    expected = (members[0].proba + members[1].proba[:, fitted.slot_orders[1]]) / 2
    novel = expected.argmax(1) >= 3  # the cells scDET calls novel keep the averaged values
    np.testing.assert_allclose(out.proba[novel], expected[novel], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out.features, members[0].features)  # the first member's
    assert not np.array_equal(members[0].proba, members[1].proba)  # two different networks


def test_save_load_round_trip(tmp_path, data, fitted) -> None:
    _, tgt = data
    fitted.save(tmp_path / "m")
    loaded = OpenWorldAnnotator.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(tgt).proba, fitted.predict(tgt).proba)
    assert loaded.classes == fitted.classes and loaded.config == fitted.config
    with pytest.raises(FileNotFoundError, match="holds no saved OpenWorldAnnotator"):
        OpenWorldAnnotator.load(tmp_path / "nothing")


def test_a_model_saved_before_ensembles_loads_as_one_member(tmp_path, data) -> None:
    ref, tgt = data
    single = replace(TINY, members=1, seen_labels="scdet")  # a model saved before had no labeller
    model = OpenWorldAnnotator(5, config=single, seed=0).fit(ref, tgt, label_key="cell_type")
    # the former layout: one state dict, priors a list of estimates, no members or slot orders
    folder = tmp_path / "old"
    folder.mkdir()
    torch.save(model.nets[0].state_dict(), folder / MODEL_FILE)
    model.save(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / META_FILE).read_text())
    meta["priors"], meta["history"] = meta["priors"][0], meta["history"][0]
    del meta["slot_orders"], meta["config"]["members"]
    for name in ("seen_labels", "seen_labeller_cells", "seen_override"):
        del meta["config"][name]
    (folder / META_FILE).write_text(json.dumps(meta))
    loaded = OpenWorldAnnotator.load(folder)
    assert loaded.config == single and len(loaded.nets) == 1
    np.testing.assert_array_equal(loaded.priors[0], model.priors[0])
    np.testing.assert_array_equal(loaded.predict(tgt).proba, model.predict(tgt).proba)


def test_seen_cells_are_named_by_the_linear_labeller_and_novel_ones_kept(data, tmp_path) -> None:
    ref, tgt = data
    longer = replace(TINY, epochs=6, seen_override=0.0)  # 3 epochs call every cell novel
    fitted = OpenWorldAnnotator(5, config=longer, seed=0).fit(ref, tgt, label_key="cell_type")
    out = fitted.predict(tgt)
    loader = fitted._loader(prepare(tgt, genes=fitted.genes, name="target"), train=False, seed=0)
    members = [stage.predict(net, loader, TINY.student_temperature) for net in fitted.nets]
    scdet = stage.average_members(members, fitted.slot_orders)
    linear = fitted.seen_labeller.proba(loader)
    called_seen = scdet.label < 3
    assert 0 < called_seen.sum() < tgt.n_obs
    names = np.asarray(out.label, dtype=str)
    np.testing.assert_array_equal(
        names[called_seen], np.asarray(fitted.seen, dtype=str)[linear[called_seen].argmax(1)]
    )
    np.testing.assert_array_equal(
        names[~called_seen], np.asarray(fitted.classes, dtype=str)[scdet.label[~called_seen]]
    )
    mass = scdet.proba[called_seen, :3].sum(1, keepdims=True)
    np.testing.assert_allclose(out.proba[called_seen, :3], mass * linear[called_seen], rtol=1e-5)
    # the seed's rule by name: the averaged networks' argmax
    by_proto = OpenWorldAnnotator(5, config=replace(longer, seen_labels="scdet"), seed=0)
    proto = by_proto.fit(*data, label_key="cell_type").predict(tgt)
    assert by_proto.seen_labeller is None and not np.array_equal(proto.label, out.label)
    np.testing.assert_array_equal(
        proto.proba.argmax(1), pd.Categorical(proto.label, categories=by_proto.classes).codes
    )
    fitted.save(tmp_path / "linear")  # the labeller is saved with the model
    again = OpenWorldAnnotator.load(tmp_path / "linear")
    assert again.config.seen_labels == "linear" and again.seen_labeller is not None
    np.testing.assert_array_equal(again.predict(tgt).proba, out.proba)
    with pytest.raises(ValueError, match=r"seen_override must be in \[0, 1\), got 1.5"):
        OpenWorldAnnotator(5, config=replace(TINY, seen_override=1.5))
    with pytest.raises(ValueError, match=r"seen_labels must be one of \('linear', 'scdet'\)"):
        OpenWorldAnnotator(5, config=replace(TINY, seen_labels="knn"))
