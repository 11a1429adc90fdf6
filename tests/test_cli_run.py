"""``acsleuth run`` end to end on tiny h5ad files (few epochs)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _helpers import FastACsleuth, run_in

import acsleuth
from acsleuth.cli import main


def _run(cli_files, *extra: str) -> int:
    return run_in(cli_files, "--quiet", *extra)


def test_run_writes_every_output_and_leaves_inputs_alone(cli_files, capsys) -> None:
    before = (cli_files / "tgt.h5ad").read_bytes()
    assert _run(cli_files, "--batch-key", "batch", "--label-key", "cell_type") == 0
    assert "called anomalous" in capsys.readouterr().out
    out = cli_files / "out"
    target = ad.read_h5ad(out / "target.h5ad")
    assert {"acsleuth_score", "acsleuth_anomaly", "acsleuth_subtype"} <= set(target.obs)
    cells = pd.read_csv(out / "cells.csv", index_col="cell")
    assert list(cells.columns) == ["score", "anomaly", "subtype"] and len(cells) == 100
    assert acsleuth.ACsleuth.load(out / "model").is_fitted
    assert (out / "report.md").exists()
    assert (cli_files / "tgt.h5ad").read_bytes() == before
    assert not [p for p in cli_files.iterdir() if p.name.startswith(".")]  # no temporaries left
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # the backed target's copy keeps X; the corrected matrix streamed to disk equals run()'s
    reference, original = ad.read_h5ad(cli_files / "ref.h5ad"), ad.read_h5ad(cli_files / "tgt.h5ad")
    assert (target.X != original.X).nnz == 0
    expected = FastACsleuth(device="cpu", random_state=2024).run(
        reference, original, batch_key="batch"
    )
    np.testing.assert_array_equal(
        target.layers["acsleuth_corrected"], expected.layers["acsleuth_corrected"]
    )
    np.testing.assert_array_equal(target.obs["acsleuth_score"], expected.obs["acsleuth_score"])
    pd.testing.assert_series_equal(target.obs["acsleuth_subtype"], expected.obs["acsleuth_subtype"])


def test_saved_model_scores_new_data_identically(cli_files) -> None:
    assert _run(cli_files) == 0
    first = ad.read_h5ad(cli_files / "out" / "target.h5ad").obs["acsleuth_score"].to_numpy()
    assert (
        main(
            [
                "run",
                "--model",
                str(cli_files / "out" / "model"),
                "--target",
                str(cli_files / "tgt.h5ad"),
                "--out",
                str(cli_files / "again"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    again = ad.read_h5ad(cli_files / "again" / "target.h5ad").obs["acsleuth_score"].to_numpy()
    np.testing.assert_array_equal(first, again)


def test_errors_are_one_line_and_debug_shows_the_traceback(cli_files, capsys) -> None:
    assert _run(cli_files, "--batch-key", "nope") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    with pytest.raises(KeyError):
        _run(cli_files, "--batch-key", "nope", "--debug")
