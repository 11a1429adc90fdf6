"""The report's plots of a run: scores per group, per-batch rates, training losses, the UMAP."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.collections import PathCollection, PolyCollection

from acsleuth import pl


def by_hand() -> AnnData:
    """10 cells: batch "a" (4 cells, 1 called), batch "b" (6 cells, 3 called); the called score
    is "ensemble", threshold 0.55; two well-separated groups in the embedding."""
    n = 10
    score = np.array([0.1, 0.2, 0.3, 0.9, 0.1, 0.2, 0.4, 0.7, 0.8, 0.95])
    anomaly = score > 0.55
    obs = pd.DataFrame(
        {
            "donor": pd.Categorical(["a"] * 4 + ["b"] * 6),
            "cell_type": pd.Categorical(np.where(anomaly, "new", "T")),
            "acsleuth_score": score,
            "acsleuth_anomaly": anomaly,
            "acsleuth_subtype": pd.Categorical.from_codes(
                np.where(anomaly, np.arange(n) % 2, -1), categories=["0", "1"]
            ),
        },
        index=[f"c{i}" for i in range(n)],
    )
    embedding = np.random.default_rng(0).normal(size=(n, 4)) + 10 * anomaly[:, None]
    uns = {
        "acsleuth": {
            "score": "ensemble",
            "threshold": 0.55,
            "params": {"batch_key": "donor"},
            "history": {
                "subtype desc": {"loss": np.array([0.5, 0.2]), "changed": np.array([0.1, 0.0])},
                "module I prepare": {"critic": np.array([3.0, 2.0, 1.0])},
            },
        }
    }
    return AnnData(obs=obs, obsm={"X_acsleuth": embedding.astype(np.float32)}, uns=uns)


def test_score_groups_draw_a_violin_per_group_with_the_threshold_and_the_score_named() -> None:
    adata = by_hand()
    ax = pl.score_groups(adata, show=False)
    assert ax.get_ylabel() == "ensemble score" and ax.get_xlabel() == "anomaly call"
    ticks = [tick.get_text() for tick in ax.get_xticklabels()]
    assert ticks == ["normal (6)", "anomaly (4)"]
    violins = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(violins) == 2
    assert any(np.allclose(line.get_ydata(), 0.55) for line in ax.lines)  # the threshold
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(len(c.get_offsets()) for c in points) == [4, 6]  # every cell drawn
    drawn = np.sort(np.concatenate([c.get_offsets()[:, 1] for c in points]))
    np.testing.assert_allclose(drawn, np.sort(adata.obs["acsleuth_score"]))


def test_a_strip_plot_by_an_obs_column_has_no_violins() -> None:
    ax = pl.score_groups(by_hand(), groupby="donor", kind="strip", show=False)
    assert ax.get_xlabel() == "donor"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["a (4)", "b (6)"]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    with pytest.raises(ValueError, match="kind must be 'violin' or 'strip'"):
        pl.score_groups(by_hand(), kind="box", show=False)
    with pytest.raises(KeyError, match=r"groupby 'batch' is not an obs column \(columns:"):
        pl.score_groups(by_hand(), groupby="batch", show=False)


def test_batch_rates_are_the_share_called_per_batch_of_the_runs_batch_key() -> None:
    ax = pl.batch_rates(by_hand(), show=False)  # batch key "donor" from uns params
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [25.0, 50.0])  # 1 of 4, 3 of 6
    assert [t.get_text() for t in ax.texts] == ["1/4", "3/6"]
    overall = [line for line in ax.lines if np.allclose(line.get_ydata(), 40.0)]
    assert overall and ax.get_legend().get_texts()[0].get_text() == "all cells (40.0%)"
    assert ax.get_xlabel() == "donor"


def test_batch_rates_without_a_batch_key_say_what_to_pass() -> None:
    adata = by_hand()
    del adata.uns["acsleuth"]["params"]
    with pytest.raises(ValueError, match="pass batch_key="):
        pl.batch_rates(adata, show=False)
    ax = pl.batch_rates(adata, batch_key="cell_type", show=False)
    np.testing.assert_allclose([bar.get_height() for bar in ax.patches], [0.0, 100.0])  # "T", "new"


def test_losses_draw_each_stage_in_pipeline_order_one_line_per_loss() -> None:
    fig = pl.losses(by_hand(), title="training", return_fig=True)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["module I prepare", "subtype desc"]  # module I before DESC
    desc = fig.axes[1]
    lines = {line.get_label(): line for line in desc.lines}
    np.testing.assert_allclose(lines["loss"].get_ydata(), [0.5, 0.2])
    np.testing.assert_allclose(lines["loss"].get_xdata(), [1, 2])  # epochs count from 1
    assert [t.get_text() for t in desc.get_xticklabels()] == ["1", "2"]
    assert fig._suptitle.get_text() == "training"


def test_losses_say_what_is_missing() -> None:
    adata = by_hand()
    with pytest.raises(ValueError, match=r"stages \['style'\] were not trained"):
        pl.losses(adata, stages=["style"], show=False)
    with pytest.raises(ValueError, match="with ax, pass stages="):
        pl.losses(adata, ax=pl.batch_rates(adata, show=False), show=False)
    del adata.uns["acsleuth"]["history"]
    with pytest.raises(KeyError, match="history'\\] is missing"):
        pl.losses(adata, show=False)


def test_umap_colours_by_call_subtype_and_batch_and_says_when_it_samples() -> None:
    adata = by_hand()
    fig = pl.umap(adata, label_key="cell_type", return_fig=True)
    assert [ax.get_title() for ax in fig.axes] == ["call", "subtype", "donor", "cell_type"]
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["normal (6)", "0 (1)", "1 (3)"]  # cells 3, 7, 8, 9: codes 1, 1, 0, 1
    assert fig._suptitle.get_text() == "UMAP of obsm['X_acsleuth']"
    sampled = pl.umap(adata, color=["call"], max_cells=7, return_fig=True)
    assert sum(len(c.get_offsets()) for c in sampled.axes[0].collections) == 7
    assert "7 of 10 cells at random" in sampled._suptitle.get_text()


def test_the_umap_graph_of_many_cells_is_exact_and_builds_where_pynndescent_broke() -> None:
    """10,000 cells: scanpy's default (pynndescent) failed there with scipy 1.17 (a whole
    ``acsleuth run`` lost its report); each cell's neighbours are its true nearest ones."""
    from acsleuth._figures import neighbour_graph

    x = np.random.default_rng(0).normal(size=(10_000, 4)).astype(np.float32)
    view = AnnData(obsm={"X_rep": x})
    neighbour_graph(view, "X_rep", n_neighbors=5)
    distances = view.obsp["distances"]
    first = distances[0].indices
    brute = np.argsort(((x - x[0]) ** 2).sum(1))[1:5]
    assert set(first) == set(brute) and distances.shape == (10_000, 10_000)
