"""The options users expect from ``acsleuth run`` and ``demo``, and the run's provenance."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _helpers import run_in

import acsleuth
from acsleuth.cli import build_parser, main

QUICK = ["--device", "cpu", "--quiet", "--epochs", "prepare=2,train=1,score=2,style=1,subtype=2"]


def _run(folder, out: str, *extra: str, target: str = "tgt.h5ad") -> ad.AnnData:
    assert run_in(folder, *QUICK, *extra, out=out, target=target) == 0
    return ad.read_h5ad(folder / out / "target.h5ad")


def test_layer_reads_the_named_matrix_of_both_inputs(cli_files) -> None:
    """X is scaled data (negative values, refused); layers["counts"] holds the counts."""
    for name in ("ref", "tgt"):
        adata = ad.read_h5ad(cli_files / f"{name}.h5ad")
        adata.layers["counts"] = adata.X.copy()
        adata.X = adata.X.toarray() - 1.0
        adata.write_h5ad(cli_files / f"{name}_scaled.h5ad")
    assert (
        main(
            [
                "run",
                "--reference",
                str(cli_files / "ref_scaled.h5ad"),
                "--target",
                str(cli_files / "tgt_scaled.h5ad"),
                "--out",
                str(cli_files / "refused"),
                *QUICK,
            ]
        )
        == 2
    )
    with_layer = main(
        [
            "run",
            "--reference",
            str(cli_files / "ref_scaled.h5ad"),
            "--target",
            str(cli_files / "tgt_scaled.h5ad"),
            "--out",
            str(cli_files / "layer"),
            "--layer",
            "counts",
            "--no-correct",
            *QUICK,
        ]
    )
    assert with_layer == 0
    from_x = _run(cli_files, "x", "--no-correct")
    from_layer = ad.read_h5ad(cli_files / "layer" / "target.h5ad")
    np.testing.assert_allclose(
        from_layer.obs["acsleuth_score"], from_x.obs["acsleuth_score"], rtol=1e-6
    )
    assert from_layer.uns["acsleuth"]["params"]["layer"] == "counts"


def test_no_correct_and_no_corrected_layer(cli_files) -> None:
    skipped = _run(cli_files, "skipped", "--no-correct", "--batch-key", "batch")
    assert (
        "style" not in skipped.uns["acsleuth"]["timings"]
        and "acsleuth_corrected" not in skipped.layers
    )
    assert not skipped.uns["acsleuth"]["params"]["correct"]
    unwritten = _run(cli_files, "unwritten", "--no-corrected-layer", "--batch-key", "batch")
    assert "style" in unwritten.uns["acsleuth"]["timings"]  # corrected, used for subtyping
    assert (
        "acsleuth_corrected" not in unwritten.layers and "acsleuth_corrected" not in unwritten.obsm
    )


def test_no_batch_scale_turns_the_scale_off_and_needs_a_batch_key(cli_files, capsys) -> None:
    scaled = _run(cli_files, "scaled", "--no-correct", "--batch-key", "batch")
    table = scaled.uns["acsleuth"]["batch_scale"]
    assert list(table.index) == list(scaled.obs["batch"].cat.categories)
    unscaled = _run(
        cli_files, "unscaled", "--no-correct", "--batch-key", "batch", "--no-batch-scale"
    )
    assert "batch_scale" not in unscaled.uns["acsleuth"]
    assert unscaled.uns["acsleuth"]["params"]["batch_scale"] is False
    knn = [a.obsm["acsleuth_scores"]["knn"].to_numpy() for a in (scaled, unscaled)]
    assert not np.allclose(*knn)
    capsys.readouterr()
    rc = run_in(cli_files, *QUICK, "--no-batch-scale", out="refused")
    err = capsys.readouterr().err
    assert rc == 2 and "--no-batch-scale applies to --batch-key only" in err
    assert err.count("\n") == 1 and not (cli_files / "refused").exists()


def test_score_n_top_genes_and_named_epochs(cli_files) -> None:
    annotated = _run(
        cli_files,
        "opts",
        "--score",
        "scaled",
        "--n-top-genes",
        "20",
        "--no-correct",
        "--epochs",
        "prepare=3,train=0",
    )
    assert annotated.uns["acsleuth"]["score"] == "scaled"
    model = acsleuth.ACsleuth.load(cli_files / "opts" / "model")
    assert len(model.genes_) == 20
    assert len(model.history_["prepare"]) == 3 and model.history_["train"] == []


@pytest.mark.parametrize(
    ("epochs", "message"),
    [
        ("bogus=1", "unknown stage 'bogus'"),
        ("prepare=x", "expected a whole number"),
        ("1,2", "2 plain numbers; give five"),
    ],
)
def test_bad_epochs_are_refused_in_one_line(cli_files, capsys, epochs, message) -> None:
    rc = run_in(cli_files, "--quiet", "--epochs", epochs)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_help_shows_defaults_and_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = capsys.readouterr().out
    assert "(default: auto)" in text and "examples:" in text and "prepare 50" in text
    assert "(default: None)" not in text


def test_provenance_is_recorded_and_reported(cli_files) -> None:
    annotated = _run(
        cli_files, "prov", "--batch-key", "batch", "--anomaly-ratio", "0.3", "--no-correct"
    )
    uns = annotated.uns["acsleuth"]
    params = uns["params"]
    assert (
        params["batch_key"] == "batch"
        and params["anomaly_ratio"] == 0.3
        and params["n_subtypes"] == "auto"
    )
    assert params["target"] == str((cli_files / "tgt.h5ad").resolve())
    assert (
        params["command"].startswith("acsleuth run --reference")
        and "--batch-key batch" in params["command"]
    )
    assert "None" not in [str(v) for v in params.values()] and "layer" not in params  # None: absent
    assert {"version", "backend", "device"} <= set(uns) and uns["device"] == "cpu"
    report = (cli_files / "prov" / "report.md").read_text()
    assert (
        "## Parameters" in report
        and "| batch_key | `batch` |" in report
        and "acsleuth run --reference" in report
    )


def test_demo_quiet_logs_nothing(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path / "demo"),
                "--quiet",
                "--device",
                "cpu",
                "--epochs",
                "prepare=1,train=1,score=1,style=1,subtype=1",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "acsleuth:" not in captured.err and "F1 x NMI" in captured.out
