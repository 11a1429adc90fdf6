"""``acsleuth demo`` end to end (few epochs) and its refusal to write into a foreign folder."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

from acsleuth.cli import main


def test_demo_writes_annotated_outputs(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "1", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for name in ("residual", "scaled", "cosine", "critic", "mmd", "AUROC", "runtime"):
        assert name in printed
    target = ad.read_h5ad(out / "target.h5ad")
    assert {"acsleuth_score", "acsleuth_anomaly"} <= set(target.obs)
    cells = pd.read_csv(out / "cells.csv", index_col="cell")
    assert len(cells) == target.n_obs and cells["is_anomaly"].sum() == 95
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    # a second run replaces its own outputs
    assert main(["demo", "--out", str(out), "--epochs", "1", "1", "1", "--device", "cpu"]) == 0


def test_demo_refuses_a_folder_it_did_not_write(tmp_path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="was not written by the demo"):
        main(["demo", "--out", str(tmp_path), "--epochs", "1", "1", "1"])
    assert (tmp_path / "mine.txt").read_text() == "keep"
