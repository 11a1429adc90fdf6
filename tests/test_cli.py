"""``acsleuth demo`` end to end (few epochs) and its refusal to write into a foreign folder."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from acsleuth.cli import main
from acsleuth.demo import PEER

QUICK = ["--epochs", "2", "1", "2", "2", "3", "--device", "cpu"]


def test_demo_runs_the_pipeline_with_and_without_correction(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    for text in ("without batch correction", "with batch correction", "F1 x NMI", "NMI", "wrote"):
        assert text in printed
    target = ad.read_h5ad(out / "target.h5ad")
    assert {"acsleuth_score", "acsleuth_anomaly", "acsleuth_subtype", "batch"} <= set(target.obs)
    assert "acsleuth_corrected" in target.layers
    assert set(target.obs["batch"]) == {"target_0", "target_1"}
    cells = pd.read_csv(out / "cells.csv", index_col="cell")
    assert len(cells) == target.n_obs
    assert set(cells.loc[cells["is_anomaly"], "cell_type"]) == {"CD19+ B", "Dendritic"}
    table = pd.read_csv(out / "metrics.csv", index_col="run")
    assert list(table.index) == ["without batch correction", "with batch correction", PEER]
    assert ((table["F1 x NMI"] >= 0) & (table["F1 x NMI"] <= 1)).all()
    # the peer is told the ratio and the number of types; acsleuth is told the types only
    assert table.loc[PEER, "called"] == cells["is_anomaly"].sum()
    assert table.loc[PEER, "subtypes"] == 2
    assert (table.loc[["without batch correction", "with batch correction"], "subtypes"] <= 2).all()
    for name in ("report.md", "scores.png", "umap.png", "subtypes.png", "confusion.png"):
        assert (out / name).exists(), name
    # a second run replaces its own outputs
    assert main(["demo", "--out", str(out), "--held-out", "CD19+ B", *QUICK]) == 0
    cells = pd.read_csv(out / "cells.csv", index_col="cell")
    assert set(cells.loc[cells["is_anomaly"], "cell_type"]) == {"CD19+ B"}


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path), *QUICK]) == 2
    assert "was not written by the demo" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"
