"""Plots in scanpy style: ``show``, ``ax`` and ``return_fig``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def scores(
    adata: AnnData,
    *,
    score: str | None = None,
    groupby: str | None = None,
    key: str = "acsleuth",
    bins: int = 40,
    ax: Axes | None = None,
    show: bool | None = None,
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
    """
    import matplotlib.pyplot as plt

    values, threshold = _score_values(adata, score, key)
    groups = adata.obs[groupby if groupby is not None else f"{key}_anomaly"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=bins)
    for group in groups.astype("category").cat.categories:
        mask = (groups == group).to_numpy()
        ax.hist(values[mask], bins=edges, alpha=0.6, label=f"{group} ({mask.sum()})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel(f"{score or 'anomaly'} score")
    ax.set_ylabel("cells")
    ax.legend(fontsize="small", title=groupby)
    if show or (show is None and ax is None and not return_fig):
        plt.show()
    if return_fig:
        return fig
    return None if show else ax


def _score_values(adata: AnnData, score: str | None, key: str) -> tuple[np.ndarray, float | None]:
    if f"{key}_score" not in adata.obs:
        raise KeyError(
            f"obs['{key}_score'] is missing; run acsleuth.tl.score_anomalies(adata, model) first"
        )
    if score is None:
        return adata.obs[f"{key}_score"].to_numpy(float), adata.uns.get(key, {}).get("threshold")
    table = adata.obsm.get(f"{key}_scores")
    if table is None or score not in table:
        available = [] if table is None else list(table.columns)
        raise KeyError(f"score {score!r} not in obsm['{key}_scores'] (available: {available})")
    return np.asarray(table[score], dtype=float), None
