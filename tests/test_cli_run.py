"""``acsleuth run`` end to end on tiny h5ad files (few epochs)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import acsleuth
from acsleuth import datasets
from acsleuth.cli import main

FAST = {"prepare_epochs": 2, "train_epochs": 1, "score_epochs": 2, "warm_epochs": 2,
        "style_epochs": 1, "subtype_epochs": 2, "batch_size": 32, "n_memory": 50,
        "verbose": False}


class FastACsleuth(acsleuth.ACsleuth):
    def __init__(self, **kwargs) -> None:
        super().__init__(**{**FAST, **kwargs})


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(acsleuth, "ACsleuth", FastACsleuth)
    reference, target = datasets.synthetic(120, 100, 50, n_anomaly_types=2, anomaly_ratio=0.3,
                                           n_batches=2, seed=1)
    reference.write_h5ad(tmp_path / "ref.h5ad")
    target.write_h5ad(tmp_path / "tgt.h5ad")
    return tmp_path


def _run(files, *extra: str) -> int:
    return main(["run", "--reference", str(files / "ref.h5ad"), "--target", str(files / "tgt.h5ad"),
                 "--out", str(files / "out"), "--device", "cpu", "--quiet", *extra])


def test_run_writes_every_output_and_leaves_inputs_alone(files, capsys) -> None:
    before = (files / "tgt.h5ad").read_bytes()
    assert _run(files, "--batch-key", "batch", "--label-key", "cell_type") == 0
    assert "called anomalous" in capsys.readouterr().out
    out = files / "out"
    target = ad.read_h5ad(out / "target.h5ad")
    assert {"acsleuth_score", "acsleuth_anomaly", "acsleuth_subtype"} <= set(target.obs)
    cells = pd.read_csv(out / "cells.csv", index_col="cell")
    assert list(cells.columns) == ["score", "anomaly", "subtype"] and len(cells) == 100
    assert acsleuth.ACsleuth.load(out / "model").is_fitted
    assert (out / "report.md").exists()
    assert (files / "tgt.h5ad").read_bytes() == before
    assert not [p for p in files.iterdir() if p.name.startswith(".")]  # no temporaries left
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # the backed target's copy keeps X; the corrected matrix streamed to disk equals run()'s
    reference, original = ad.read_h5ad(files / "ref.h5ad"), ad.read_h5ad(files / "tgt.h5ad")
    assert (target.X != original.X).nnz == 0
    expected = FastACsleuth(device="cpu", random_state=2024).run(reference, original, batch_key="batch")
    np.testing.assert_array_equal(target.layers["acsleuth_corrected"], expected.layers["acsleuth_corrected"])
    np.testing.assert_array_equal(target.obs["acsleuth_score"], expected.obs["acsleuth_score"])
    pd.testing.assert_series_equal(target.obs["acsleuth_subtype"], expected.obs["acsleuth_subtype"])


def test_existing_out_is_refused_without_overwrite(files, capsys) -> None:
    (files / "out").mkdir()
    (files / "out" / "keep.txt").write_text("mine")
    assert _run(files) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (files / "out" / "keep.txt").read_text() == "mine"
    assert _run(files, "--overwrite") == 0 and not (files / "out" / "keep.txt").exists()


def test_saved_model_scores_new_data_identically(files) -> None:
    assert _run(files) == 0
    first = ad.read_h5ad(files / "out" / "target.h5ad").obs["acsleuth_score"].to_numpy()
    assert main(["run", "--model", str(files / "out" / "model"), "--target",
                 str(files / "tgt.h5ad"), "--out", str(files / "again"), "--device", "cpu",
                 "--quiet"]) == 0
    again = ad.read_h5ad(files / "again" / "target.h5ad").obs["acsleuth_score"].to_numpy()
    np.testing.assert_array_equal(first, again)


def test_errors_are_one_line_and_debug_shows_the_traceback(files, capsys) -> None:
    assert _run(files, "--batch-key", "nope") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    with pytest.raises(KeyError):
        _run(files, "--batch-key", "nope", "--debug")
