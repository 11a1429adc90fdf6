"""What the plots of :mod:`acsleuth.pl` share: a new or given axes, scanpy's ending, obs
columns named in errors, and the 2-D layout of an embedding."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes, bool]:
    """The figure of ``ax``, or a new figure and axes; the flag says whether it is new."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax, True
    return ax.figure, ax, False


def obs_column(adata: AnnData, column: str, argument: str) -> pd.Series:
    """``adata.obs[column]``; a ``KeyError`` listing the columns when it is not there."""
    if column not in adata.obs:
        raise KeyError(
            f"{argument} {column!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    return adata.obs[column]


def finish(
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


def umap_layout(x: np.ndarray, *, max_cells: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """UMAP (scanpy's, 15 neighbours) of the rows of ``x``: the rows laid out (all of them, or
    ``max_cells`` drawn at random without replacement when there are more) and their
    ``(n, 2)`` coordinates. Leaves torch's thread count as it found it."""
    import scanpy as sc
    import torch

    rows = np.arange(len(x))
    if len(x) > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), max_cells, replace=False))
    view = AnnData(obsm={"X_rep": np.asarray(x[rows], dtype=np.float32)})
    threads = torch.get_num_threads()
    try:
        neighbour_graph(view, "X_rep", n_neighbors=min(15, len(rows) - 1), seed=seed)
        sc.tl.umap(view, random_state=seed)
    finally:  # numba's OpenMP layer resets torch's thread count, and with it later results
        torch.set_num_threads(threads)
    return rows, view.obsm["X_umap"]


def neighbour_graph(adata: AnnData, use_rep: str, *, n_neighbors: int, seed: int = 0) -> None:
    """``sc.pp.neighbors`` on ``obsm[use_rep]`` with exact neighbours (scikit-learn's
    transformer). On larger inputs scanpy's default, pynndescent, hands back a scipy
    ``csr_array``, which scanpy 1.11 then reads with ``getnnz`` (gone in scipy 1.17): a whole
    ``acsleuth run`` of 20,000 cells failed while drawing its report."""
    import scanpy as sc

    sc.pp.neighbors(
        adata, use_rep=use_rep, n_neighbors=n_neighbors, random_state=seed, transformer="sklearn"
    )


def panel_axes(
    ax: Axes | None, n: int, size: tuple[float, float], *, n_cols: int, what: str
) -> tuple[Figure, list[Axes], bool]:
    """``n`` panels of ``size`` inches, ``n_cols`` to a row, on a new figure; or ``ax`` alone
    (then ``n`` must be 1: a ``ValueError`` naming the argument ``what`` otherwise)."""
    import matplotlib.pyplot as plt

    if ax is not None:
        if n != 1:
            raise ValueError(f"with ax, pass {what}=[one name]: each panel needs its own axes")
        return ax.figure, [ax], False
    n_cols = max(1, min(n_cols, n))
    n_rows = -(-n // n_cols)
    fig, grid = plt.subplots(
        n_rows,
        n_cols,
        figsize=(size[0] * n_cols, size[1] * n_rows),
        squeeze=False,
        layout="constrained",
    )
    axes = list(grid.flat)
    for spare in axes[n:]:
        spare.remove()
    return fig, axes[:n], True


def colouring(adata: AnnData, name: str, key: str) -> pd.Series:
    """The categories a UMAP panel ``name`` is coloured by: ``"call"`` (anomaly or normal),
    ``"subtype"`` (normal cells' is "normal"), or an ``obs`` column."""
    from ._anndata.detect import keys

    if name == "call":
        calls = adata.obs[keys(key).anomaly].to_numpy(dtype=bool)
        values = pd.Categorical(np.where(calls, "anomaly", "normal"), ["normal", "anomaly"])
        return pd.Series(values, index=adata.obs_names)
    if name == "subtype":
        subtype = adata.obs[keys(key).subtype].astype("category")
        return subtype.cat.add_categories(["normal"]).fillna("normal")
    return obs_column(adata, name, "color").astype("category")


def scatter_categories(ax: Axes, xy: np.ndarray, values: pd.Series, *, title: str) -> None:
    """Points ``xy`` coloured by the categories of ``values`` ("normal" in light grey, drawn
    first; "anomaly" in red), with a legend of the categories and their counts beside the axes."""
    import matplotlib.pyplot as plt

    categories = list(values.cat.categories)
    palette = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20").colors
    size = max(2.0, min(30.0, 3000 / max(len(xy), 1)))
    others = iter(palette * (len(categories) // len(palette) + 1))
    order = sorted(categories, key=lambda c: c != "normal")
    fixed = {"normal": "lightgrey", "anomaly": "tab:red"}
    for category in order:
        mask = (values == category).to_numpy()
        colour = fixed.get(category) or next(others)
        ax.scatter(
            *xy[mask].T, s=size, color=colour, linewidths=0, label=f"{category} ({mask.sum()})"
        )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")
    ax.legend(
        fontsize="x-small",
        markerscale=max(1.0, 16 / size) ** 0.5,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
    )


LOSS_STAGE_ORDER = ("module I", "mmd warm start", "mmd predictor", "style", "subtype")
"""Order of the panels of :func:`acsleuth.pl.losses`: the pipeline's (by name prefix),
others last."""


def stage_rank(stage: str) -> tuple[int, str]:
    """Sort key of a trained stage: its place in :data:`LOSS_STAGE_ORDER`, then its name."""
    ranks = [i for i, prefix in enumerate(LOSS_STAGE_ORDER) if stage.startswith(prefix)]
    return (ranks[0] if ranks else len(LOSS_STAGE_ORDER), stage)


def groups_of(adata: AnnData, groupby: str | None, key: str) -> pd.Series:
    """The categorical ``obs[groupby]`` (a ``KeyError`` listing the columns when it is not
    there); the anomaly call ("normal", "anomaly") when ``groupby`` is None."""
    if groupby is None:
        return colouring(adata, "call", key)
    return obs_column(adata, groupby, "groupby").astype("category")


def score_values(
    adata: AnnData, score: str | None, key: str
) -> tuple[np.ndarray, float | None, str]:
    """A score's values, its threshold (the called score's only) and its name."""
    from ._anndata.detect import keys

    if keys(key).score not in adata.obs:
        raise KeyError(
            f"obs['{key}_score'] is missing; run acsleuth.tl.score_anomalies(adata, model) first"
        )
    if score is None:
        uns = adata.uns.get(key, {})
        values = adata.obs[keys(key).score].to_numpy(float)
        return values, uns.get("threshold"), str(uns.get("score", "anomaly"))
    table = adata.obsm.get(keys(key).scores)
    if table is None or score not in table:
        available = [] if table is None else list(table.columns)
        raise KeyError(f"score {score!r} not in obsm['{key}_scores'] (available: {available})")
    return np.asarray(table[score], dtype=float), None, score


def confusion_table(adata: AnnData, subtype: pd.Series, label_key: str | None) -> pd.DataFrame:
    """Counts of subtype (rows, every category) x label (columns) over the subtyped cells."""
    if label_key is None:
        raise ValueError("kind='confusion' needs label_key, the obs column of labels to compare")
    obs_column(adata, label_key, "label_key")
    typed = subtype.notna().to_numpy()
    if not typed.any():
        raise ValueError("no cell has a subtype (no predicted anomalies); nothing to compare")
    labels = adata.obs[label_key][typed].astype(str)
    table = pd.crosstab(subtype[typed].astype(str), labels)
    return table.reindex([str(c) for c in subtype.cat.categories], fill_value=0)


__all__ = [
    "colouring",
    "confusion_table",
    "finish",
    "groups_of",
    "new_axes",
    "obs_column",
    "panel_axes",
    "scatter_categories",
    "score_values",
    "stage_rank",
    "umap_layout",
]
