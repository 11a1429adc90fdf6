"""``acsleuth explain``: panels from a file, inputs untouched, one-line errors."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

import acsleuth
from acsleuth.cli import main


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory):
    adata = acsleuth.datasets.causal_panels(90, 3, n_dependent=10, n_noise=10, seed=2)
    path = tmp_path_factory.mktemp("explain") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_explain_writes_panels_and_leaves_the_input(h5ad, tmp_path, capsys) -> None:
    before = _digest(h5ad)
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                "--input",
                str(h5ad),
                "--groupby",
                "group",
                "--out",
                str(out),
                "--n-genes",
                "5",
            ]
        )
        == 0
    )
    assert _digest(h5ad) == before
    panels = pd.read_csv(out / "panels.csv")
    assert list(panels.columns) == ["group", "rank", "gene", "score", "direction"]
    assert len(panels) == 15 and set(panels["direction"]) <= {-1, 1}
    summary = pd.read_csv(out / "summary.csv", index_col="group")
    assert (summary["flipped"] > 0.5).all() and (out / "panels.png").is_file()
    assert "3 groups" in capsys.readouterr().out
    # --out exists: refused without --overwrite, replaced with it
    assert main(["explain", "--input", str(h5ad), "--groupby", "group", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "explain",
                "--input",
                str(h5ad),
                "--groupby",
                "group",
                "--out",
                str(out),
                "--overwrite",
                "--n-genes",
                "3",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out / "panels.csv")) == 9


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--groupby", "nope"], "--groupby 'nope' is not an obs column"),
        (["--groupby", "group", "--mode", "one_vs_one"], "needs reference="),
        (
            ["--groupby", "group", "--embedding", "X_none"],
            "neither 'whitened', 'pca' nor an obsm key",
        ),
    ],
)
def test_bad_arguments_give_one_line(h5ad, tmp_path, capsys, extra, message) -> None:
    assert main(["explain", "--input", str(h5ad), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "o").exists()
