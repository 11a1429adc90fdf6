"""pl.subtypes and write_report: figures, metrics, report.md, and an untouched input."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from _helpers import FAST_RUN
from anndata import AnnData

from acsleuth import ACsleuth, datasets, pl
from acsleuth.report import write_report

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def by_hand(n: int = 12) -> AnnData:
    """``n`` cells annotated as a run would: the last 6 anomalous, subtypes "0", "1" ("2" empty)."""
    rng = np.random.default_rng(0)
    anomaly = np.arange(n) >= n - 6
    subtype = np.where(anomaly, np.arange(n) % 2, -1)
    labels = np.array(["a", "b", "c"])[np.arange(n) % 3]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.where(anomaly, labels, "normal")),
            "is_anomaly": anomaly,
            "acsleuth_score": np.linspace(0, 1, n),
            "acsleuth_anomaly": anomaly,
            "acsleuth_subtype": pd.Categorical.from_codes(subtype, categories=["0", "1", "2"]),
        },
        index=[f"c{i}" for i in range(n)],
    )
    uns = {
        "acsleuth": {
            "threshold": 0.5,
            "n_subtypes": 3,
            "silhouette_curve": {},
            "timings": {"train": 1.0},
        }
    }
    return AnnData(obs=obs, obsm={"X_acsleuth": rng.normal(size=(n, 8))}, uns=uns)


@pytest.fixture(scope="module")
def annotated() -> AnnData:
    reference, target = datasets.synthetic(80, 80, 40, anomaly_ratio=0.25, n_batches=2, seed=0)
    return ACsleuth(**FAST_RUN, random_state=0).run(reference, target, batch_key="batch")


@pytest.fixture(scope="module")
def report(annotated, tmp_path_factory):
    before = annotated.copy()
    out_dir = tmp_path_factory.mktemp("report")
    path = write_report(
        annotated, out_dir, label_key="cell_type", truth_key="is_anomaly", umap=True
    )
    return path, before


def test_subtype_sizes_draw_a_bar_per_subtype() -> None:
    ax = pl.subtypes(by_hand(), show=False)
    assert [bar.get_height() for bar in ax.patches] == [3, 3, 0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0", "1", "2"]


def test_subtype_confusion_counts_the_predicted_anomalies() -> None:
    fig = pl.subtypes(by_hand(), kind="confusion", label_key="cell_type", return_fig=True)
    counts = fig.axes[0].images[0].get_array()
    assert counts.shape == (3, 3)  # subtypes 0-2 x labels a-c of the anomalies ("normal" absent)
    assert counts.sum() == 6 and counts[2].sum() == 0


def test_subtype_plot_errors_say_what_is_missing() -> None:
    adata = by_hand()
    with pytest.raises(ValueError, match="needs label_key"):
        pl.subtypes(adata, kind="confusion", show=False)
    with pytest.raises(KeyError, match="'tissue' is not an obs column"):
        pl.subtypes(adata, kind="confusion", label_key="tissue", show=False)
    with pytest.raises(ValueError, match="kind must be"):
        pl.subtypes(adata, kind="pie", show=False)
    del adata.obs["acsleuth_subtype"]
    with pytest.raises(KeyError, match="subtype_anomalies"):
        pl.subtypes(adata, show=False)


def test_report_writes_every_figure_and_the_metrics(report) -> None:
    path, _ = report
    names = [
        "scores.png",
        "score_groups.png",
        "umap.png",
        "batches.png",
        "losses.png",
        "subtypes.png",
        "confusion.png",
    ]
    for name in names:
        assert (path.parent / name).read_bytes()[:8] == PNG_MAGIC
    text = path.read_text()
    assert all(f"]({name})" in text for name in names)
    assert "| anomalies called | 20 (25.0%) |" in text and "## Silhouette curve" in text
    for metric in ("auroc", "ap", "f1", "nmi", "ari", "f1_nmi", "module I", "score"):
        assert f"| {metric} |" in text
    assert "| score | scaled |" in text and "The scaled score per cell_type" in text
    assert "UMAP of the embedding by call, subtype, batch, cell_type" in text
    assert not list(path.parent.glob(".*"))  # no temporary files left


def test_report_leaves_the_input_unchanged(annotated, report) -> None:
    _, before = report
    for attr in ("obsm", "obsp", "uns", "layers"):
        assert set(getattr(annotated, attr)) == set(getattr(before, attr))
    pd.testing.assert_frame_equal(annotated.obs, before.obs)
    np.testing.assert_array_equal(annotated.obsm["X_acsleuth"], before.obsm["X_acsleuth"])


def test_the_umap_leaves_torch_thread_count_alone(annotated, tmp_path) -> None:
    """numba's OpenMP start-up (the first UMAP of a process) resets a thread count that torch
    took from OMP_NUM_THREADS, which changes later results; the report restores it. Checked
    in a fresh interpreter."""
    import os
    import subprocess
    import sys

    annotated.write_h5ad(tmp_path / "annotated.h5ad")
    code = (
        "import sys, torch, anndata\n"
        "from acsleuth.report import write_report\n"
        "write_report(anndata.read_h5ad(sys.argv[1]), sys.argv[2], label_key='cell_type', "
        "umap=True)\n"
        "print('threads', torch.get_num_threads())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "annotated.h5ad"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert (tmp_path / "umap.png").exists() and "threads 1" in done.stdout


def test_tiny_report_skips_the_umap_and_honours_overwrite(tmp_path) -> None:
    path = write_report(by_hand(8), tmp_path, label_key="cell_type")
    assert not (tmp_path / "umap.png").exists() and (tmp_path / "confusion.png").exists()
    text = path.read_text()
    assert "UMAP skipped: 8 cells" in text and "## Metrics" not in text
    mtime = path.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_report(by_hand(8), tmp_path, overwrite=False)
    assert path.stat().st_mtime_ns == mtime


def test_report_checks_its_inputs_before_writing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(by_hand(), tmp_path / "missing")
    adata = by_hand()
    with pytest.raises(KeyError, match="'truth' is not an obs column"):
        write_report(adata, tmp_path, truth_key="truth")
    del adata.obs["acsleuth_subtype"]
    with pytest.raises(KeyError, match="subtype_anomalies"):
        write_report(adata, tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_run_records_each_trained_stages_losses(annotated) -> None:
    history = annotated.uns["acsleuth"]["history"]
    epochs = {
        stage: {name: len(v) for name, v in losses.items()} for stage, losses in history.items()
    }
    gan = {"critic": 1, "gp": 1, "generator": 1, "own": 1}
    assert epochs["module I prepare"] == {name: 2 for name in gan}  # FAST: 2 prepare epochs
    assert epochs["module I train"] == gan and epochs["style"] == gan
    assert set(epochs["subtype desc"]) == {"loss", "changed"}
    assert "mmd predictor" not in history  # the "scaled" score trains no predictor


def test_report_tables_rates_per_batch_and_nests_the_timings(annotated, report) -> None:
    path, _ = report
    text = path.read_text()
    calls = annotated.obs["acsleuth_anomaly"].groupby(annotated.obs["batch"], observed=True)
    for batch, called in calls:
        rate = f"{called.mean():.1%}"
        assert f"| {batch} | {called.size} | {int(called.sum())} | {rate} |" in text
    lines = text.splitlines()
    module = next(i for i, line in enumerate(lines) if line.startswith("| module I |  |"))
    assert lines[module + 1].startswith("|  | prepare |")  # its sub-stages follow it
    assert lines[module + 2].startswith("|  | train |")
    timings = annotated.uns["acsleuth"]["timings"]
    total = sum(v for k, v in timings.items() if " > " not in k)
    assert f"| **total** (of the stages) | | **{total:.2f}** |" in text


def test_the_report_leaves_a_missing_batch_column_out_with_a_note(tmp_path) -> None:
    adata = by_hand()
    adata.uns["acsleuth"]["params"] = {"batch_key": "donor"}
    text = write_report(adata, tmp_path).read_text()
    assert "Batches left out: the run's batch_key 'donor' is not in obs." in text
    assert not (tmp_path / "batches.png").exists()
