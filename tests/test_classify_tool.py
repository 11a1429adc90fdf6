"""``tl.classify``, ``pl.ood_scores`` and ``acsleuth classify``: keys, conventions, bad input."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from classify_toy import FAST, toy

from acsleuth import pl, tl
from acsleuth.cli import main
from acsleuth.model import CellTypeClassifier

matplotlib.use("Agg")
KEY = "acsleuth_class"


@pytest.fixture(scope="module")
def model():
    return CellTypeClassifier(random_state=0, **FAST).fit(toy(seed=0), label_key="cell_type")


def test_classify_writes_every_documented_key(model) -> None:
    target = toy(n_per_type=20, types=(0, 1, 3), seed=2)
    tl.classify(target, model=model)
    far = (target.obs["cell_type"] == "type 3").to_numpy()
    assert list(target.obs[KEY].cat.categories) == ["type 0", "type 1", "type 2"]
    for suffix in ("_confidence", "_ood_score", "_ood"):
        assert f"{KEY}{suffix}" in target.obs
    assert target.obsm[f"{KEY}_proba"].shape == (60, 3)
    uns = target.uns[KEY]
    assert uns["classes"] == ["type 0", "type 1", "type 2"] and uns["input"] == "X"
    assert {
        "validation_accuracy",
        "validation_ece",
        "threshold",
        "divergences",
        "params",
        "timings",
    } <= set(uns)
    assert target.obs[f"{KEY}_ood_score"][far].mean() > target.obs[f"{KEY}_ood_score"][~far].mean()
    np.testing.assert_array_equal(
        target.obs[f"{KEY}_ood"], target.obs[f"{KEY}_ood_score"] > uns["threshold"]
    )


def test_reject_calls_out_of_distribution_cells_unassigned_and_copy_leaves_the_input(model) -> None:
    target = toy(n_per_type=20, types=(0, 3), seed=2)
    before = target.obs.copy()
    out = tl.classify(target, model=model, reject=True, key_added="cls", copy=True)
    pd.testing.assert_frame_equal(target.obs, before)
    called = out.obs["cls"].astype(str) == "unassigned"
    np.testing.assert_array_equal(called, out.obs["cls_ood"])
    assert called.sum() > 0 and out.uns["cls"]["reject"]


def test_classify_uses_batch_corrected_expression_when_present(model) -> None:
    target = toy(n_per_type=20, types=(0, 1), seed=2)
    target.layers["acsleuth_corrected"] = target.X[::-1].copy()  # rows swapped: types swap too
    tl.classify(target, model=model)
    assert target.uns[KEY]["input"] == "acsleuth_corrected"
    plain = tl.classify(target, model=model, corrected_key=None, copy=True)
    np.testing.assert_array_equal(target.obs[KEY].to_numpy()[::-1], plain.obs[KEY].to_numpy())


def test_classify_trains_from_a_reference_and_says_what_it_needs() -> None:
    target = toy(n_per_type=10, seed=3)
    tl.classify(target, toy(seed=0), label_key="cell_type", random_state=0, **{**FAST, "epochs": 2})
    assert KEY in target.obs
    with pytest.raises(ValueError, match="give reference= and label_key="):
        tl.classify(target, toy(seed=0))
    with pytest.raises(KeyError, match="label_key 'nope' is not an obs column"):
        tl.classify(target, toy(seed=0), label_key="nope")


def test_the_ood_plot_draws_a_box_per_predicted_type_and_the_threshold(model) -> None:
    target = toy(n_per_type=20, types=(0, 1, 2), seed=2)
    with pytest.raises(KeyError, match=r"run acsleuth\.tl\.classify"):
        pl.ood_scores(target, show=False)
    tl.classify(target, model=model)
    fig = pl.ood_scores(target, return_fig=True)
    ax = fig.axes[0]
    assert len(ax.get_xticklabels()) == 3
    assert any(np.allclose(line.get_ydata(), target.uns[KEY]["threshold"]) for line in ax.lines)
    assert "energy+softmax+knn+type" in ax.get_title()  # the score it was run with


@pytest.fixture
def files(tmp_path):
    toy(seed=0).write_h5ad(tmp_path / "ref.h5ad")
    toy(n_per_type=20, types=(0, 1, 3), seed=2).write_h5ad(tmp_path / "tgt.h5ad")
    return tmp_path


def _classify(files, *extra: str) -> int:
    return main(
        [
            "classify",
            "--reference",
            str(files / "ref.h5ad"),
            "--target",
            str(files / "tgt.h5ad"),
            "--label-key",
            "cell_type",
            "--out",
            str(files / "out"),
            "--device",
            "cpu",
            "--quiet",
            "--epochs",
            "2",
            *extra,
        ]
    )


def test_the_command_writes_its_outputs_and_leaves_inputs_alone(files, capsys) -> None:
    before = (files / "tgt.h5ad").read_bytes()
    assert _classify(files) == 0
    assert "called out of distribution" in capsys.readouterr().out
    out = files / "out"
    target = ad.read_h5ad(out / "target.h5ad")
    assert {KEY, f"{KEY}_ood_score", f"{KEY}_ood"} <= set(target.obs)
    cells = pd.read_csv(out / "cells.csv", index_col="cell")
    assert list(cells.columns) == ["type", "confidence", "ood_score", "ood"] and len(cells) == 60
    assert CellTypeClassifier.load(out / "model").classes_ == ["type 0", "type 1", "type 2"]
    assert (out / "ood_scores.png").exists()
    assert (files / "tgt.h5ad").read_bytes() == before
    assert not [p for p in files.iterdir() if p.name.startswith(".")]
    assert _classify(files) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert _classify(files, "--overwrite") == 0


def test_the_command_refuses_bad_input_in_one_line(files, capsys) -> None:
    assert _classify(files, "--label-key", "celltype") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "label_key 'celltype' is not an obs column" in err
    assert not (files / "out").exists()
