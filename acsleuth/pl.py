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
from ._anndata.detect import keys
from ._constants import KEY_ADDED

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
    values, threshold = _score_values(adata, score, key)
    if groupby is not None:
        _obs_column(adata, groupby, "groupby")
    groups = adata.obs[groupby if groupby is not None else keys(key).anomaly]
    fig, ax, own = _figure(ax, (5, 3.5))
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=bins)
    for group in groups.astype("category").cat.categories:
        mask = (groups == group).to_numpy()
        ax.hist(values[mask], bins=edges, alpha=0.6, label=f"{group} ({mask.sum()})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel(f"{score or 'anomaly'} score")
    ax.set_ylabel("cells")
    ax.legend(fontsize="small", title=groupby)
    return _finish(fig, ax, own=own, show=show, return_fig=return_fig, title=title, save=save)


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
        fig, ax, own = _figure(ax, (4, 3))
        ax.bar([str(c) for c in counts.index], counts.to_numpy())
        ax.set_xlabel("subtype")
        ax.set_ylabel("cells")
    elif kind == "confusion":
        table = _confusion(adata, subtype, label_key)
        fig, ax, own = _figure(ax, (1.5 + 0.6 * table.shape[1], 1.5 + 0.5 * table.shape[0]))
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
    return _finish(fig, ax, own=own, show=show, return_fig=return_fig, title=title, save=save)


def ood_scores(
    adata: AnnData,
    *,
    key: str = CLASSIFY_KEY,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """OOD scores (``-LSE``) of :func:`acsleuth.tl.classify`, a box per predicted type, with the
    threshold of the OOD call; higher = more out of distribution."""
    labels, values, threshold = read_scores(adata, key)
    groups = [str(g) for g in labels.astype("category").cat.categories]
    data = [values[(labels.astype(str) == g).to_numpy()] for g in groups]
    fig, ax, own = _figure(ax, (max(4.0, 0.6 * len(groups) + 2), 3.5))
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
    ax.set_ylabel("OOD score (-LSE)")
    ax.set_xlabel("predicted type")
    return _finish(fig, ax, own=own, show=show, return_fig=return_fig)


def _confusion(adata: AnnData, subtype: pd.Series, label_key: str | None) -> pd.DataFrame:
    """Counts of subtype (rows, every category) x label (columns) over the subtyped cells."""
    if label_key is None:
        raise ValueError("kind='confusion' needs label_key, the obs column of labels to compare")
    _obs_column(adata, label_key, "label_key")
    typed = subtype.notna().to_numpy()
    if not typed.any():
        raise ValueError("no cell has a subtype (no predicted anomalies); nothing to compare")
    labels = adata.obs[label_key][typed].astype(str)
    table = pd.crosstab(subtype[typed].astype(str), labels)
    return table.reindex([str(c) for c in subtype.cat.categories], fill_value=0)


def _figure(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes, bool]:
    """The figure of ``ax``, or a new figure and axes; the flag says whether it is new."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax, True
    return ax.figure, ax, False


def _obs_column(adata: AnnData, column: str, argument: str) -> pd.Series:
    """``adata.obs[column]``; a ``KeyError`` listing the columns when it is not there."""
    if column not in adata.obs:
        raise KeyError(
            f"{argument} {column!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    return adata.obs[column]


def _finish(
    fig: Figure,
    ax: Axes,
    *,
    own: bool,
    show: bool | None,
    return_fig: bool,
    title: str | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | None:
    """scanpy's ending: title, save when asked, show when asked (or by default on a new
    figure that is not saved), then return."""
    import matplotlib.pyplot as plt

    if title is not None:
        ax.set_title(title)
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    shown = show or (show is None and own and not return_fig and save is None)
    if shown:
        plt.show()
    if return_fig:
        return fig
    return None if shown else ax


def _score_values(adata: AnnData, score: str | None, key: str) -> tuple[np.ndarray, float | None]:
    if keys(key).score not in adata.obs:
        raise KeyError(
            f"obs['{key}_score'] is missing; run acsleuth.tl.score_anomalies(adata, model) first"
        )
    if score is None:
        return adata.obs[keys(key).score].to_numpy(float), adata.uns.get(key, {}).get("threshold")
    table = adata.obsm.get(keys(key).scores)
    if table is None or score not in table:
        available = [] if table is None else list(table.columns)
        raise KeyError(f"score {score!r} not in obsm['{key}_scores'] (available: {available})")
    return np.asarray(table[score], dtype=float), None


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
    import matplotlib.pyplot as plt

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
    if ax is not None and len(groups) != 1:
        raise ValueError("with ax, pass groups=[one group]: each group needs its own axes")
    if ax is None:
        fig, axes = plt.subplots(
            1, len(groups), figsize=(2.6 * len(groups), 0.3 * n_genes + 1.2), squeeze=False
        )
        axes, own = list(axes[0]), True
    else:
        fig, axes, own = ax.figure, [ax], False
    for axis, group in zip(axes, groups, strict=True):
        genes = list(uns["names"][group][:n_genes])[::-1]
        signed = (uns["scores"][group][:n_genes] * uns["direction"][group][:n_genes])[::-1]
        axis.barh(genes, signed, color=np.where(signed >= 0, "tab:red", "tab:blue"))
        axis.axvline(0, color="k", linewidth=0.8)
        axis.set_title(f"{group} (flipped {uns['flipped'][group]:.0%})", fontsize="small")
        axis.tick_params(labelsize="x-small")
    axes[0].set_xlabel("ACE score (+ enriched, - depleted)", fontsize="small")
    fig.tight_layout()
    return _finish(fig, axes[0], own=own, show=show, return_fig=return_fig)


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
        fig, ax, own = _figure(ax, (max(4.0, 0.45 * len(order)), 3.5))
        counts = pd.Series(labels).value_counts().reindex(order)
        colors = ["tab:orange" if c.startswith("novel_") else "tab:blue" for c in order]
        ax.bar(range(len(order)), counts.to_numpy(), color=colors)
        ax.set_ylabel("cells")
    else:
        table = pd.crosstab(adata.obs[groupby].astype(str).to_numpy(), labels).reindex(
            columns=order
        )
        share = table.div(table.sum(1), axis=0).fillna(0.0)
        fig, ax, own = _figure(ax, (max(4.0, 0.45 * len(order)), max(3.0, 0.35 * len(share))))
        image = ax.imshow(share.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_yticks(range(len(share)), share.index)
        ax.set_ylabel(groupby)
        fig.colorbar(image, ax=ax, label="share of row")
    ax.set_xticks(range(len(order)), order, rotation=90)
    ax.set_xlabel(key)
    return _finish(fig, ax, own=own, show=show, return_fig=return_fig)
