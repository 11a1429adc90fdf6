"""Plots in scanpy style: ``show``, ``ax`` and ``return_fig``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from ._anndata.annotate import KEY_ADDED as ANNOT_KEY
from ._anndata.annotate import read_annotation
from ._anndata.classify import KEY as CLASSIFY_KEY
from ._anndata.classify import read_scores
from ._anndata.detect import anomaly_rates, keys, run_batch_key
from ._constants import KEY_ADDED
from ._figures import (
    colouring,
    confusion_table,
    finish,
    groups_of,
    new_axes,
    obs_column,
    panel_axes,
    scatter_categories,
    score_values,
    stage_rank,
    umap_layout,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def scores(
    adata: AnnData,
    *,
    score: str | None = None,
    groupby: str | None = None,
    key: str = KEY_ADDED,
    bins: int = 40,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Histogram of anomaly scores, one colour per ``obs[groupby]`` group.

    Parameters
    ----------
    adata
        Annotated by :func:`acsleuth.tl.score_anomalies`.
    score
        A column of ``obsm[f"{key}_scores"]`` (``"residual"``, ``"mmd"``, …); default: the
        called score ``obs[f"{key}_score"]``, drawn with its threshold.
    groupby
        Categorical ``obs`` column to split by (e.g. true labels); default: the anomaly call.
        A column that is not there is a ``KeyError`` listing the columns.
    title, save
        The axes' title; a file to write the figure to (its suffix picks the format; the
        figure is then not shown unless ``show=True``).
    """
    values, threshold, name = score_values(adata, score, key)
    groups = groups_of(adata, groupby, key)
    fig, ax, own = new_axes(ax, (5, 3.5))
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=bins)
    for group in groups.cat.categories:
        mask = (groups == group).to_numpy()
        ax.hist(values[mask], bins=edges, alpha=0.6, label=f"{group} ({mask.sum()})")
    ax.yaxis.get_major_locator().set_params(integer=True)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel(f"{name} score")
    ax.set_ylabel("cells")
    outside = (
        {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)} if len(groups.unique()) > 3 else {}
    )
    ax.legend(fontsize="small", title=groupby or "anomaly call", **outside)
    return finish(fig, ax, own=own, show=show, return_fig=return_fig, title=title, save=save)


def subtypes(
    adata: AnnData,
    *,
    key: str = KEY_ADDED,
    kind: Literal["sizes", "confusion"] = "sizes",
    label_key: str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Bar chart of anomaly subtype sizes, or a subtype x label count heatmap.

    Parameters
    ----------
    adata
        Annotated by :func:`acsleuth.tl.subtype_anomalies` (or :meth:`ACsleuth.run`).
    kind
        ``"sizes"``: cells per subtype; ``"confusion"``: counts of subtype x ``obs[label_key]``
        over the predicted anomalies (the cells with a subtype).
    label_key
        Categorical ``obs`` column of labels (e.g. true cell types); needed by ``"confusion"``.
    title, save
        As in :func:`scores`.
    """
    column = keys(key).subtype
    if column not in adata.obs:
        raise KeyError(
            f"obs[{column!r}] is missing; run acsleuth.tl.subtype_anomalies(adata, model) or "
            "ACsleuth.run first"
        )
    subtype = adata.obs[column].astype("category")
    if kind == "sizes":
        counts = subtype.value_counts(sort=False)
        fig, ax, own = new_axes(ax, (4, 3))
        ax.bar([str(c) for c in counts.index], counts.to_numpy())
        ax.set_xlabel("subtype")
        ax.set_ylabel("cells")
    elif kind == "confusion":
        table = confusion_table(adata, subtype, label_key)
        fig, ax, own = new_axes(ax, (1.5 + 0.6 * table.shape[1], 1.5 + 0.5 * table.shape[0]))
        image = ax.imshow(table.to_numpy(), cmap="Blues", aspect="auto")
        for (row, col), count in np.ndenumerate(table.to_numpy()):
            ax.text(col, row, str(count), ha="center", va="center", fontsize="small")
        ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
        ax.set_yticks(range(table.shape[0]), table.index)
        ax.set_xlabel(label_key)
        ax.set_ylabel("subtype")
        fig.colorbar(image, ax=ax, label="cells")
    else:
        raise ValueError(f"kind must be 'sizes' or 'confusion', got {kind!r}")
    return finish(fig, ax, own=own, show=show, return_fig=return_fig, title=title, save=save)


def ood_scores(
    adata: AnnData,
    *,
    key: str = CLASSIFY_KEY,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """OOD scores of :func:`acsleuth.tl.classify` (the score it was run with, named on the
    axis), a box per predicted type, with the threshold of the OOD call; higher = more out of
    distribution."""
    labels, values, threshold, name = read_scores(adata, key)
    groups = [str(g) for g in labels.astype("category").cat.categories]
    data = [values[(labels.astype(str) == g).to_numpy()] for g in groups]
    fig, ax, own = new_axes(ax, (max(4.0, 0.6 * len(groups) + 2), 4.5))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(
        range(1, len(groups) + 1),
        [f"{g} ({len(d)})" for g, d in zip(groups, data, strict=True)],
        rotation=60,
        ha="right",
        fontsize="small",
    )
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label="OOD threshold")
        ax.legend(fontsize="small")
    ax.set_ylabel("OOD score")
    ax.set_title(f"{name} (higher: more out of distribution)", fontsize="small")
    ax.set_xlabel("predicted type")
    return finish(fig, ax, own=own, show=show, return_fig=return_fig)


def explain_panels(
    adata: AnnData,
    *,
    key: str = "acsleuth",
    groups: list[str] | None = None,
    n_genes: int = 8,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Signed gene panels of :func:`acsleuth.tl.explain_groups`: one bar chart per group.

    A bar is the gene's ACE score, to the right (red) when the gene is enriched in the group,
    to the left (blue) when depleted. With ``ax``, ``groups`` must name one group.
    """
    uns = adata.uns.get(f"{key}_explain")
    if uns is None:
        raise KeyError(
            f"uns['{key}_explain'] is missing; run acsleuth.tl.explain_groups(adata, groupby=...) first"
        )
    names = list(uns["names"].dtype.names)
    groups = names if groups is None else [str(g) for g in groups]
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise ValueError(f"groups {unknown} were not explained; explained groups are {names}")
    size = (2.6, 0.3 * n_genes + 1.2)
    fig, axes, own = panel_axes(ax, len(groups), size, n_cols=len(groups), what="groups")
    for axis, group in zip(axes, groups, strict=True):
        genes = list(uns["names"][group][:n_genes])[::-1]
        signed = (uns["scores"][group][:n_genes] * uns["direction"][group][:n_genes])[::-1]
        axis.barh(genes, signed, color=np.where(signed >= 0, "tab:red", "tab:blue"))
        axis.axvline(0, color="k", linewidth=0.8)
        axis.set_title(f"{group} (flipped {uns['flipped'][group]:.0%})", fontsize="small")
        axis.tick_params(labelsize="x-small")
    axes[0].set_xlabel("ACE score (+ enriched, - depleted)", fontsize="small")
    return finish(fig, axes[0], own=own, show=show, return_fig=return_fig)


def annotation(
    adata: AnnData,
    *,
    groupby: str | None = None,
    key: str = ANNOT_KEY,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Cells per open-world label of :func:`acsleuth.tl.annotate`: seen types in blue, novel
    clusters in orange; with ``groupby`` (e.g. true types), a confusion heatmap of
    ``obs[groupby]`` (rows) against the labels (columns), each row normalised to 1.

    Parameters
    ----------
    adata
        Annotated by :func:`acsleuth.tl.annotate`.
    groupby
        Categorical ``obs`` column to compare the labels with.
    key
        The ``key_added`` of the annotation.
    """
    labels, classes = read_annotation(adata, key)
    order = [c for c in classes if c in set(labels)]
    if groupby is None:
        fig, ax, own = new_axes(ax, (max(4.0, 0.45 * len(order)), 3.5))
        counts = pd.Series(labels).value_counts().reindex(order)
        colors = ["tab:orange" if c.startswith("novel_") else "tab:blue" for c in order]
        ax.bar(range(len(order)), counts.to_numpy(), color=colors)
        ax.set_ylabel("cells")
    else:
        table = pd.crosstab(adata.obs[groupby].astype(str).to_numpy(), labels).reindex(
            columns=order
        )
        share = table.div(table.sum(1), axis=0).fillna(0.0)
        fig, ax, own = new_axes(ax, (max(4.0, 0.45 * len(order)), max(3.0, 0.35 * len(share))))
        image = ax.imshow(share.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_yticks(range(len(share)), share.index)
        ax.set_ylabel(groupby)
        fig.colorbar(image, ax=ax, label="share of row")
    ax.set_xticks(range(len(order)), order, rotation=90)
    ax.set_xlabel(key)
    return finish(fig, ax, own=own, show=show, return_fig=return_fig)


# ------------------------------------------------------------------ a run at a glance
STRIP_POINTS = 2000
"""Cells drawn per group by :func:`score_groups` (a random sample of larger groups)."""


def score_groups(
    adata: AnnData,
    *,
    groupby: str | None = None,
    key: str = KEY_ADDED,
    score: str | None = None,
    kind: Literal["violin", "strip"] = "violin",
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Anomaly scores per ``obs[groupby]`` group: violins with the cells over them
    (``kind="violin"``) or the cells alone (``"strip"``; at most :data:`STRIP_POINTS` per
    group, drawn at random), the threshold as a dashed line; the y-axis names the score.

    Parameters
    ----------
    groupby
        Categorical ``obs`` column (e.g. true labels or batches); default: the anomaly call.
    score
        As in :func:`scores`; the called score (e.g. ``"mmd"``) by default.
    title, save
        As in :func:`scores`.
    """
    if kind not in ("violin", "strip"):
        raise ValueError(f"kind must be 'violin' or 'strip', got {kind!r}")
    values, threshold, name = score_values(adata, score, key)
    groups = groups_of(adata, groupby, key)
    labels = [str(c) for c in groups.cat.categories]
    data = [values[(groups == c).to_numpy() & np.isfinite(values)] for c in groups.cat.categories]
    fig, ax, own = new_axes(ax, (max(4.0, 0.55 * len(labels) + 2), 3.5))
    positions = np.arange(1, len(labels) + 1)
    drawn = [i for i, d in enumerate(data) if len(d) > 1]
    if kind == "violin" and drawn:
        ax.violinplot([data[i] for i in drawn], positions[drawn], showextrema=False, widths=0.8)
    rng = np.random.default_rng(0)
    for position, cells in zip(positions, data, strict=True):
        if len(cells) > STRIP_POINTS:
            cells = rng.choice(cells, STRIP_POINTS, replace=False)
        jitter = rng.uniform(-0.2, 0.2, len(cells))
        ax.scatter(position + jitter, cells, s=4, color="k", alpha=0.4, linewidths=0)
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label="threshold")
        ax.legend(fontsize="small")
    ticks = [f"{label} ({len(d)})" for label, d in zip(labels, data, strict=True)]
    long = max(map(len, ticks), default=0) > 14 or len(ticks) > 4
    ax.set_xticks(positions, ticks, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_xlabel(groupby or "anomaly call")
    ax.set_ylabel(f"{name} score")
    return finish(fig, ax, own=own, show=show, return_fig=return_fig, title=title, save=save)


def umap(
    adata: AnnData,
    *,
    key: str = KEY_ADDED,
    color: list[str] | None = None,
    batch_key: str | None = None,
    label_key: str | None = None,
    max_cells: int = 50_000,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """UMAP of module I's embedding ``obsm[f"X_{key}"]`` (scanpy's), one panel per colouring.

    Parameters
    ----------
    color
        ``obs`` columns, or ``"call"`` (the anomaly call) and ``"subtype"``; default: the
        call, the subtype, then ``batch_key`` and ``label_key`` when there are.
    batch_key
        ``obs`` column of batches; default: the run's (``uns[key]["params"]``), when in ``obs``.
    label_key
        ``obs`` column of labels (e.g. true cell types).
    max_cells
        Lay out at most this many cells, drawn at random (the UMAP's cost grows with the
        cells); the title says so when it draws fewer than all.
    ax
        Axes for a single colouring (``color`` of one name).
    title, save
        The figure's title (the default names the embedding); as in :func:`scores`.
    """
    embedding = keys(key).embedding
    if embedding not in adata.obsm:
        raise KeyError(f"obsm[{embedding!r}] is missing; run ACsleuth.run first")
    if batch_key is None and run_batch_key(adata, key) in adata.obs:
        batch_key = run_batch_key(adata, key)
    if color is None:
        color = ["call", "subtype", *(k for k in (batch_key, label_key) if k is not None)]
    columns = {name: colouring(adata, name, key) for name in color}
    fig, axes, own = panel_axes(ax, len(columns), (4.6, 3.8), n_cols=len(columns), what="color")
    rows, xy = umap_layout(np.asarray(adata.obsm[embedding]), max_cells=max_cells)
    for axis, (name, values) in zip(axes, columns.items(), strict=True):
        scatter_categories(axis, xy, values.iloc[rows], title=name)
    sample = "" if len(rows) == adata.n_obs else f", {len(rows)} of {adata.n_obs} cells at random"
    heading = title if title is not None else f"UMAP of obsm['{embedding}']{sample}"
    if own:
        fig.suptitle(heading, fontsize="medium")
    elif title is not None:
        axes[0].set_title(title)
    return finish(fig, axes[0], own=own, show=show, return_fig=return_fig, save=save)


def batch_rates(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    key: str = KEY_ADDED,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Share of each batch's cells called anomalous (a bar per batch, "called/cells" over
    it), with the share over all cells as a dashed line.

    Parameters
    ----------
    batch_key
        ``obs`` column of batches; default: the run's (``uns[key]["params"]``).
    title, save
        As in :func:`scores`.
    """
    batch_key = batch_key if batch_key is not None else run_batch_key(adata, key)
    if batch_key is None:
        raise ValueError("the run had no batch_key; pass batch_key=, the obs column of batches")
    obs_column(adata, batch_key, "batch_key")
    table = anomaly_rates(adata, batch_key, key)
    fig, ax, own = new_axes(ax, (max(4.0, 0.6 * len(table) + 2), 3.5))
    positions = np.arange(len(table))
    bars = ax.bar(positions, 100 * table["rate"].to_numpy())
    counts = [f"{a}/{n}" for a, n in zip(table["anomalies"], table["cells"], strict=True)]
    ax.bar_label(bars, counts, fontsize="x-small")
    overall = 100 * table["anomalies"].sum() / max(table["cells"].sum(), 1)
    ax.axhline(overall, color="k", linestyle="--", linewidth=1, label=f"all cells ({overall:.1f}%)")
    ax.set_ylim(0, max(100 * table["rate"].max(), overall, 1) * 1.2)
    long = len(table) > 6 or max((len(str(b)) for b in table.index), default=0) > 8
    ax.set_xticks(positions, [str(b) for b in table.index], rotation=45 if long else 0)
    ax.set_xlabel(batch_key)
    ax.set_ylabel("anomalies called (%)")
    ax.legend(fontsize="small")
    return finish(fig, ax, own=own, show=show, return_fig=return_fig, title=title, save=save)


def losses(
    adata: AnnData,
    *,
    key: str = KEY_ADDED,
    stages: list[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Training losses per epoch (``uns[key]["history"]`` of :meth:`ACsleuth.run`): a panel
    per trained stage, a line per loss (the WGAN-GP stages: ``critic``, ``gp``,
    ``generator`` and the generator's own term; the MMD predictor; DESC's KL ``loss`` and
    the fraction of cells whose subtype ``changed``).

    Parameters
    ----------
    stages
        Stages to draw (keys of the history); default: all. With ``ax``, one stage.
    title, save
        The figure's title; as in :func:`scores`.
    """
    from matplotlib.ticker import MaxNLocator

    history = adata.uns.get(key, {}).get("history")
    if not history:
        raise KeyError(f"uns[{key!r}]['history'] is missing or empty; run ACsleuth.run first")
    stages = sorted(history, key=stage_rank) if stages is None else stages
    unknown = sorted(set(stages) - set(history))
    if unknown:
        raise ValueError(f"stages {unknown} were not trained; trained stages are {list(history)}")
    fig, axes, own = panel_axes(ax, len(stages), (4.8, 3.0), n_cols=3, what="stages")
    for axis, stage in zip(axes, stages, strict=True):
        curves = {name: np.asarray(v, dtype=float) for name, v in history[stage].items()}
        for name, values in curves.items():
            style = "--" if name == "own" else "-"  # the generator's own term hides under it
            epochs = np.arange(1, len(values) + 1)
            axis.plot(epochs, values, style, marker="o", markersize=3, label=name)
        typical = [np.median(np.abs(v)) for v in curves.values() if len(v)]
        spread = max(typical, default=0.0) / max(min(typical, default=1.0), 1e-3)
        symlog = spread > 30 and max(typical) > 10  # e.g. a generator loss 100x the critic's
        if symlog:
            axis.set_yscale("symlog", linthresh=1.0)
        axis.set_title(stage, fontsize="small")
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss (symlog)" if symlog else "loss")
        n_epochs = max(len(v) for v in curves.values())
        axis.set_xlim(0.5, n_epochs + 0.5)
        if n_epochs <= 10:
            axis.set_xticks(range(1, n_epochs + 1))
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if own and title is not None:
        fig.suptitle(title, fontsize="medium")
    elif title is not None:
        axes[0].set_title(title)
    return finish(fig, axes[0], own=own, show=show, return_fig=return_fig, save=save)
