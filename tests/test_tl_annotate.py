"""``tl.annotate``, ``pl.annotation`` and ``acsleuth annotate``: the documented keys (issue 19)."""

from __future__ import annotations

import hashlib

import matplotlib
import numpy as np
import pytest

from acsleuth import datasets, pl, tl
from acsleuth.cli import main
from acsleuth.model.annotator import OpenWorldAnnotator
from acsleuth.train.contrastive import OpenWorldConfig

matplotlib.use("Agg")
TINY = OpenWorldConfig(epochs=2, batch_size=64, estimate_every=1, kmeans_iter=5, kmeans_init=1)


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(
        120,
        150,
        40,
        n_types=3,
        n_anomaly_types=2,
        anomaly_ratio=0.3,
        proportions="long_tail",
        imbalance=4.0,
        seed=1,
    )


@pytest.fixture(scope="module")
def annotated(data):
    ref, tgt = data
    out = tl.annotate(tgt, ref, label_key="cell_type", n_types=5, copy=True, config=TINY)
    assert "acsleuth_annot" not in tgt.obs  # copy=True leaves the input alone
    return out


def test_documented_keys_are_written(annotated, tmp_path) -> None:
    a = annotated
    labels = a.obs["acsleuth_annot"].astype(str)
    assert a.obs["acsleuth_annot_novel"].dtype == bool
    np.testing.assert_array_equal(a.obs["acsleuth_annot_novel"], labels.str.startswith("novel_"))
    np.testing.assert_allclose(
        a.obs["acsleuth_annot_confidence"], a.obsm["acsleuth_annot_proba"].max(1)
    )
    assert a.obsm["X_acsleuth_annot"].shape == (a.n_obs, 128)
    uns = a.uns["acsleuth_annot"]
    assert list(uns["classes"][:3]) == ["type_0", "type_1", "type_2"] and uns["n_seen"] == 3
    assert uns["cluster_map"]["0"] == "type_0"
    assert uns["priors"].shape == (2, 2, 5)  # two networks, each estimated before epochs 1 and 2
    assert uns["params"]["n_types"] == 5 and uns["params"]["epochs"] == 2 and uns["seed"] == 0
    assert {"fit", "predict"} <= set(uns["timings"])
    sizes = [int((labels == f"novel_{i}").sum()) for i in (1, 2)]
    assert sizes == sorted(sizes, reverse=True)
    a.write_h5ad(tmp_path / "a.h5ad")  # every key survives the h5ad format


def test_n_types_below_the_reference_is_refused(data) -> None:
    ref, tgt = data
    with pytest.raises(ValueError, match="below the 3 cell types of the reference"):
        tl.annotate(tgt, ref, label_key="cell_type", n_types=1, config=TINY)
    assert "acsleuth_annot" not in tgt.obs


def test_auto_n_types_is_at_least_the_reference_types(data) -> None:
    ref, tgt = data
    model = OpenWorldAnnotator("auto", config=TINY).fit(ref, tgt, label_key="cell_type")
    assert model.n_types_ >= 3 and all(net.n_classes == model.n_types_ for net in model.nets)
    if model.n_types_ > 4:  # two or more novel types: the K of best silhouette (3 + 2 .. 3 + 8)
        assert model.n_types_ == max(model.auto_scores, key=model.auto_scores.get)
        assert min(model.auto_scores) == 5 and max(model.auto_scores) <= 11


def test_plot_bars_and_confusion(annotated) -> None:
    ax = pl.annotation(annotated, show=False)
    assert len(ax.patches) == annotated.obs["acsleuth_annot"].nunique()
    fig = pl.annotation(annotated, groupby="cell_type", return_fig=True)
    assert fig.axes[0].get_ylabel() == "cell_type"
    with pytest.raises(KeyError, match=r"run acsleuth\.tl\.annotate"):
        pl.annotation(annotated, key="other")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli_argv(data, folder) -> list[str]:
    """``acsleuth annotate`` of ``data`` written to ``folder``, one epoch, without ``--out``."""
    ref, tgt = data
    ref.write_h5ad(folder / "ref.h5ad")
    tgt.write_h5ad(folder / "tgt.h5ad")
    inputs = ["--reference", str(folder / "ref.h5ad"), "--target", str(folder / "tgt.h5ad")]
    return ["annotate", *inputs, "--label-key", "cell_type", "--n-types", "5", "--epochs", "1"]


def test_cli_annotates_into_out_and_leaves_inputs(data, tmp_path, capsys) -> None:
    argv = [*_cli_argv(data, tmp_path), "--out", str(tmp_path / "o.h5ad")]
    before = _digest(tmp_path / "ref.h5ad"), _digest(tmp_path / "tgt.h5ad")
    assert main(argv) == 0
    assert (_digest(tmp_path / "ref.h5ad"), _digest(tmp_path / "tgt.h5ad")) == before
    import anndata

    assert "acsleuth_annot_novel" in anndata.read_h5ad(tmp_path / "o.h5ad").obs
    capsys.readouterr()
    assert main(argv) == 2  # --out exists
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and err.count("\n") == 1
    assert main([*argv[:7], "--n-types", "2", "--out", str(tmp_path / "p.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "n_types=2 is below the 3 cell types" in err and err.count("\n") == 1


def test_cli_members_sets_the_number_of_networks(data, tmp_path, capsys) -> None:
    import anndata

    argv = _cli_argv(data, tmp_path)
    assert main([*argv, "--members", "1", "--out", str(tmp_path / "one.h5ad")]) == 0
    uns = anndata.read_h5ad(tmp_path / "one.h5ad").uns["acsleuth_annot"]
    assert uns["params"]["members"] == 1 and uns["params"]["epochs"] == 1
    assert uns["priors"].shape == (1, 1, 5)  # one network, one estimate (epoch 0) of 5 classes
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--members", "0", "--out", str(tmp_path / "zero.h5ad")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--members" in err and "expected a number >= 1, got 0" in err
    assert not (tmp_path / "zero.h5ad").exists()


def test_cli_seen_labels_picks_who_names_the_seen_cells(data, tmp_path) -> None:
    import anndata

    argv = _cli_argv(data, tmp_path)
    for rule in ("scdet", "linear"):
        assert main([*argv, "--seen-labels", rule, "--out", str(tmp_path / f"{rule}.h5ad")]) == 0
        uns = anndata.read_h5ad(tmp_path / f"{rule}.h5ad").uns["acsleuth_annot"]
        assert uns["params"]["seen_labels"] == rule
    with pytest.raises(SystemExit):
        main([*argv, "--seen-labels", "knn", "--out", str(tmp_path / "knn.h5ad")])
    assert not (tmp_path / "knn.h5ad").exists()
