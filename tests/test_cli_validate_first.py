"""Bad input is refused before any training, by ``acsleuth run`` and by ``ACsleuth.run``, and
leaves nothing behind (no ``--out``, no ``OUT.checkpoint/``, inputs byte-identical)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import FastACsleuth

import acsleuth
from acsleuth import datasets
from acsleuth.cli import main
from acsleuth.data import DataError


class NeverTrains(FastACsleuth):
    """Training fails the test: every check must come first."""

    def fit(self, *args, **kwargs):
        raise AssertionError("trained before the inputs were checked")


@pytest.fixture(scope="module")
def data() -> tuple[ad.AnnData, ad.AnnData]:
    return datasets.synthetic(
        60, 40, 30, n_anomaly_types=1, anomaly_ratio=0.25, n_batches=2, seed=3
    )


def _dense(adata: ad.AnnData) -> ad.AnnData:
    out = adata.copy()
    out.X = out.X.toarray() if sp.issparse(out.X) else np.array(out.X)
    return out


def _with_value(adata: ad.AnnData, value: float) -> ad.AnnData:
    out = _dense(adata)
    out.X[3, 5] = value
    return out


def _renamed(adata: ad.AnnData, rename) -> ad.AnnData:
    out = adata.copy()
    out.var_names = [rename(i, g) for i, g in enumerate(adata.var_names)]
    return out


BAD_TARGETS = {
    "nan": (lambda t: _with_value(t, np.nan), "NaN or infinite"),
    "negative": (lambda t: _with_value(t, -2.0), "negative"),
    "no shared gene": (lambda t: _renamed(t, lambda i, g: f"other{i}"), "none of the"),
    "upper-case genes": (lambda t: _renamed(t, lambda i, g: g.upper()), "only ignoring case"),
    "Ensembl ids": (lambda t: _renamed(t, lambda i, g: f"ENSG{i:011d}"), "look like Ensembl IDs"),
    "empty": (lambda t: t[:0].copy(), "0 cells"),
    "three cells": (lambda t: t[:3].copy(), "at least 4 target cells"),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _refused(folder: Path, capsys, reference: ad.AnnData, target: ad.AnnData, *extra: str) -> str:
    """Write ``reference`` and ``target`` into ``folder``, ``acsleuth run`` them with
    ``extra`` options, and return the one error line; the run must be refused (exit 2) and
    leave the folder as it was."""
    reference.write_h5ad(folder / "ref.h5ad")
    target.write_h5ad(folder / "tgt.h5ad")
    before = _snapshot(folder)
    inputs = ["--reference", str(folder / "ref.h5ad"), "--target", str(folder / "tgt.h5ad")]
    rc = main(["run", *inputs, "--out", str(folder / "out"), "--device", "cpu", "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert _snapshot(folder) == before  # no out/, no out.checkpoint/, no temporaries
    return err


@pytest.mark.parametrize("case", list(BAD_TARGETS))
def test_a_bad_target_is_refused_before_training_leaving_nothing(
    data, tmp_path, monkeypatch, capsys, case
) -> None:
    monkeypatch.setattr(acsleuth, "ACsleuth", NeverTrains)
    make, message = BAD_TARGETS[case]
    err = _refused(tmp_path, capsys, data[0], make(data[1]), "--checkpoint-every", "1")
    assert message in err and "target" in err, err
    assert "--resume" not in err, err  # no checkpoint was written, so none is offered


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-key", "nope"], "nope"),
        (["--label-key", "nope"], "nope"),
        (["--anomaly-ratio", "1.5"], "anomaly_ratio"),
        (["--n-subtypes", "0"], "n_subtypes"),
    ],
)
def test_bad_keys_and_settings_are_refused_before_training(
    data, tmp_path, monkeypatch, capsys, extra, message
) -> None:
    monkeypatch.setattr(acsleuth, "ACsleuth", NeverTrains)
    err = _refused(tmp_path, capsys, data[0], data[1], *extra)
    assert message in err, err


def test_a_bad_reference_is_refused_before_training(data, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(acsleuth, "ACsleuth", NeverTrains)
    err = _refused(tmp_path, capsys, _with_value(data[0], np.inf), data[1])
    assert "reference" in err and "NaN or infinite" in err, err


@pytest.mark.parametrize("case", ["nan", "no shared gene", "upper-case genes", "empty"])
def test_the_api_checks_the_target_before_fitting(data, case) -> None:
    make, message = BAD_TARGETS[case]
    with pytest.raises(DataError, match=message):
        NeverTrains().run(data[0], make(data[1]))


def test_case_only_matches_are_named_in_the_message(data) -> None:
    make, _ = BAD_TARGETS["upper-case genes"]
    with pytest.raises(
        DataError, match=r"30 of the 30 .* only ignoring case \(e\.g\. 'gene_0' vs 'GENE_0'"
    ):
        NeverTrains().run(data[0], make(data[1]))
