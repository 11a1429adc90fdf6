"""``--use-raw`` of ``acsleuth run`` and ``acsleuth explain``: reads ``.raw``, excludes
``--layer``, and is refused in one line (before any work) where an input has no ``.raw``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _helpers import run_in

from acsleuth.cli import main

QUICK = ["--device", "cpu", "--quiet", "--no-correct", "--epochs", "prepare=2,train=1,score=2"]


def _scaled_with_raw(folder) -> None:
    """``ref_raw.h5ad`` and ``tgt_raw.h5ad``: X scaled (negative values, refused), ``.raw``
    the counts of ``ref.h5ad`` and ``tgt.h5ad``."""
    for name in ("ref", "tgt"):
        adata = ad.read_h5ad(folder / f"{name}.h5ad")
        adata.raw = adata.copy()
        adata.X = adata.X.toarray() - 1.0
        adata.write_h5ad(folder / f"{name}_raw.h5ad")


def test_use_raw_scores_the_raw_matrix_of_both_inputs(cli_files) -> None:
    _scaled_with_raw(cli_files)
    args = ["--reference", str(cli_files / "ref_raw.h5ad"), *QUICK, "--use-raw"]
    assert run_in(cli_files, *args, out="raw", target="tgt_raw.h5ad") == 0
    assert run_in(cli_files, *QUICK, out="x") == 0
    from_raw = ad.read_h5ad(cli_files / "raw" / "target.h5ad")
    from_x = ad.read_h5ad(cli_files / "x" / "target.h5ad")
    np.testing.assert_allclose(
        from_raw.obs["acsleuth_score"], from_x.obs["acsleuth_score"], rtol=1e-6
    )
    params = from_raw.uns["acsleuth"]["params"]
    assert params["use_raw"] and "--use-raw" in params["command"]


def test_use_raw_and_layer_are_one_choice(cli_files, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_in(cli_files, *QUICK, "--use-raw", "--layer", "counts")
    assert exit_.value.code == 2
    assert "argument --layer: not allowed with argument --use-raw" in capsys.readouterr().err
    assert not (cli_files / "out").exists()


def test_use_raw_without_raw_is_refused_in_one_line_leaving_nothing(cli_files, capsys) -> None:
    before = {p.name: p.read_bytes() for p in cli_files.iterdir()}
    assert run_in(cli_files, *QUICK, "--use-raw") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--use-raw: --target" in err[0] and "has no .raw" in err[0]
    assert {p.name: p.read_bytes() for p in cli_files.iterdir()} == before  # nothing new


def test_explain_use_raw_is_refused_without_raw_and_excludes_no_raw(cli_files, capsys) -> None:
    base = ["explain", "--input", str(cli_files / "tgt.h5ad"), "--groupby", "cell_type"]
    assert main([*base, "--out", str(cli_files / "panels"), "--use-raw"]) == 2
    assert "--use-raw: --input" in capsys.readouterr().err
    assert not (cli_files / "panels").exists()
    with pytest.raises(SystemExit):
        main([*base, "--out", str(cli_files / "panels"), "--use-raw", "--no-raw"])
    assert "not allowed with argument" in capsys.readouterr().err
