"""A one-directory summary of an annotated target: figures, metrics and ``report.md``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from . import metrics, pl
from ._anndata.detect import keys
from ._atomic import atomic_path
from ._constants import KEY_ADDED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_report"]

MIN_UMAP_CELLS = 10


def write_report(
    adata: AnnData,
    out_dir: Path,
    *,
    key: str = KEY_ADDED,
    label_key: str | None = None,
    truth_key: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write figures and a Markdown summary of an :meth:`ACsleuth.run` result to ``out_dir``.

    Parameters
    ----------
    adata
        Target annotated by :meth:`ACsleuth.run` (or the ``tl`` tools, subtyping included);
        left unchanged.
    out_dir
        Existing directory to write ``report.md``, ``scores.png``, ``umap.png``,
        ``subtypes.png`` and, with ``label_key``, ``confusion.png`` into.
    key
        The ``key_added`` of the run.
    label_key
        ``obs`` column of true labels: groups the score histogram, and is compared with the
        subtypes (confusion heatmap; NMI, ARI and F1 x NMI given ``truth_key``).
    truth_key
        Boolean ``obs`` column of the true anomalies: adds AUROC, AP and F1 of the calls.
    overwrite
        Replace existing files; otherwise an existing one is an error and nothing is written.

    Returns
    -------
    Path
        The path of ``report.md``.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {out_dir} does not exist")
    _check_keys(adata, key, label_key, truth_key)
    anomaly = adata.obs[keys(key).anomaly].to_numpy(dtype=bool)
    scores = _metrics(adata, key=key, label_key=label_key, truth_key=truth_key)
    figures: dict[str, tuple[str, Callable[[], Figure]]] = {
        "scores.png": (
            "Anomaly scores",
            lambda: pl.scores(adata, key=key, groupby=label_key, return_fig=True),
        ),
        "subtypes.png": ("Subtype sizes", lambda: pl.subtypes(adata, key=key, return_fig=True)),
    }
    notes = []
    if adata.n_obs >= MIN_UMAP_CELLS:
        figures["umap.png"] = ("UMAP of the embedding", lambda: _umap_figure(adata, key))
    else:
        notes.append(f"UMAP skipped: {adata.n_obs} cells (fewer than {MIN_UMAP_CELLS}).")
    if label_key is not None and anomaly.any():
        figures["confusion.png"] = (
            f"Subtypes x {label_key}",
            lambda: pl.subtypes(
                adata, key=key, kind="confusion", label_key=label_key, return_fig=True
            ),
        )
    elif label_key is not None:
        notes.append("Confusion heatmap skipped: no predicted anomalies.")
    paths = [out_dir / name for name in (*figures, "report.md")]
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist; pass overwrite=True to replace them")
    for name, (_, draw) in figures.items():
        _save(draw(), out_dir / name)
    titles = {name: title for name, (title, _) in figures.items()}
    text = _markdown(adata, key, scores, notes, titles)
    report = out_dir / "report.md"
    with atomic_path(report, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return report


def _metrics(
    adata: AnnData, *, key: str, label_key: str | None, truth_key: str | None
) -> dict[str, float]:
    """Detection metrics given ``truth_key``, plus subtyping metrics given ``label_key`` too.

    Returns
    -------
    dict
        ``auroc``, ``ap``, ``f1_at_ratio``, ``f1`` and, with ``label_key``, ``nmi``, ``ari``,
        ``f1_nmi`` (see :mod:`acsleuth.metrics`); empty without ``truth_key``.
    """
    if truth_key is None:
        return {}
    truth = adata.obs[truth_key].to_numpy()
    anomaly = adata.obs[keys(key).anomaly].to_numpy(dtype=bool)
    table = metrics.detection_report(truth, adata.obs[keys(key).score].to_numpy(float), anomaly)
    if label_key is not None:
        true_type = adata.obs[label_key].to_numpy(object)
        subtype = adata.obs[keys(key).subtype].to_numpy(object)
        table |= metrics.subtype_scores(truth, anomaly, true_type, subtype)
        evaluated = truth.astype(bool) & anomaly
        if len(set(true_type[evaluated])) < 2:  # one true type: NMI and ARI say nothing
            table |= {"nmi": np.nan, "ari": np.nan, "f1_nmi": np.nan}
    return table


def _check_keys(adata: AnnData, key: str, label_key: str | None, truth_key: str | None) -> None:
    """Fail before writing anything when a needed annotation is missing."""
    for column in (keys(key).score, keys(key).anomaly, keys(key).subtype):
        if column not in adata.obs:
            raise KeyError(
                f"obs[{column!r}] is missing; run ACsleuth.run (or acsleuth.tl.score_anomalies "
                "and acsleuth.tl.subtype_anomalies) first"
            )
    if keys(key).embedding not in adata.obsm:
        raise KeyError(f"obsm['X_{key}'] is missing; run ACsleuth.run first")
    for name, column in (("label_key", label_key), ("truth_key", truth_key)):
        if column is not None and column not in adata.obs:
            raise KeyError(f"{name} {column!r} is not an obs column")


def _umap_figure(adata: AnnData, key: str) -> Figure:
    """UMAP of ``obsm[f"X_{key}"]`` on a new AnnData, coloured by anomaly call and subtype."""
    import scanpy as sc

    call = np.where(adata.obs[keys(key).anomaly].to_numpy(dtype=bool), "anomaly", "normal")
    obs = pd.DataFrame(
        {
            "anomaly call": pd.Categorical(call, categories=["normal", "anomaly"]),
            "subtype": adata.obs[keys(key).subtype].to_numpy(),
        },
        index=adata.obs_names.copy(),
    )
    obs["subtype"] = obs["subtype"].astype("category")
    view = AnnData(
        obs=obs, obsm={"X_rep": np.array(adata.obsm[keys(key).embedding], dtype=np.float32)}
    )
    threads = torch.get_num_threads()
    try:
        sc.pp.neighbors(view, use_rep="X_rep", n_neighbors=min(15, view.n_obs - 1), random_state=0)
        sc.tl.umap(view, random_state=0)
    finally:  # numba's OpenMP layer resets torch's thread count, and with it later results
        torch.set_num_threads(threads)
    return sc.pl.umap(
        view, color=["anomaly call", "subtype"], wspace=0.4, show=False, return_fig=True
    )


def _save(fig: Figure, path: Path) -> None:
    """Save ``fig`` as PNG through a temporary file, then close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def _markdown(
    adata: AnnData, key: str, scores: dict[str, float], notes: list[str], figures: dict[str, str]
) -> str:
    """The text of ``report.md``."""
    uns = adata.uns.get(key, {})
    n_called = int(adata.obs[keys(key).anomaly].sum())
    threshold = uns.get("threshold")
    lines = [
        "# ACsleuth report",
        "",
        "| | |",
        "|---|---|",
        f"| cells | {adata.n_obs} |",
        f"| anomalies called | {n_called} ({n_called / max(adata.n_obs, 1):.1%}) |",
        f"| threshold | {'n/a' if threshold is None else f'{float(threshold):.4g}'} |",
        f"| subtypes | {uns.get('n_subtypes', 'n/a')} |",
        *(f"| {name} | {uns[name]} |" for name in ("version", "backend", "device") if name in uns),
        "",
        *_parameters(uns.get("params", {})),
        "## Silhouette curve",
        "",
    ]
    curve = uns.get("silhouette_curve", {})
    if len(curve):
        lines += _table(("k", "silhouette"), curve)
    else:
        lines += ["Not computed (fixed number of subtypes).", ""]
    lines += ["## Timings", ""]
    timings = uns.get("timings", {})
    lines += _table(("stage", "seconds"), timings) if len(timings) else ["None recorded.", ""]
    lines += _subtype_panels(adata, key)
    if scores:
        lines += ["## Metrics", "", *_table(("metric", "value"), scores), *METRIC_DEFINITIONS]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += ["## Figures", ""]
    for name, title in figures.items():
        lines += [f"![{title}]({name})", ""]
    return "\n".join(lines)


def _subtype_panels(adata: AnnData, key: str) -> list[str]:
    """Markdown lines of each subtype's ACE panel (:func:`acsleuth.tl.explain_subtypes`), if any."""
    from ._anndata.explain import explain_key

    uns = adata.uns.get(explain_key(key))
    if uns is None:
        return []
    lines = [
        "## Subtype panels (ACE)",
        "",
        "Top 8 genes that move a cell out of its subtype "
        "(+ enriched, - depleted in it); flipped: fraction of cells moved out.",
        "",
        "| subtype | flipped | genes |",
        "|---|---:|---|",
    ]
    for group in uns["names"].dtype.names:
        genes = zip(uns["names"][group][:8], uns["direction"][group][:8], strict=True)
        panel = ", ".join(f"{name}{'+' if sign > 0 else '-'}" for name, sign in genes)
        lines.append(f"| {group} | {float(uns['flipped'][group]):.0%} | {panel} |")
    return [*lines, ""]


def _parameters(params: dict) -> list[str]:
    """The run's settings and inputs as a Markdown table (settings that were None are absent)."""
    if not len(params):
        return []
    rows = [
        f"| {name} | `{str(value).replace('|', '/')}` |" for name, value in sorted(params.items())
    ]
    return ["## Parameters", "", "| setting | value |", "|---|---|", *rows, ""]


METRIC_DEFINITIONS = [
    "AUROC and AP: ranking of the true anomalies by score (1 = all above every normal cell; "
    "AP's chance level is the anomaly fraction). F1: of the anomaly calls against the truth; "
    "f1_at_ratio: of the top-N scores, N the number of true anomalies. NMI and ARI: agreement "
    "of the subtypes with the true labels over the true anomalies called (n/a when these hold "
    "a single true type); f1_nmi = F1 x NMI.",
    "",
]


def _table(header: tuple[str, str], rows: dict) -> list[str]:
    """Markdown lines of a two-column table of numbers ("n/a" for undefined ones), then a
    blank line."""
    body = [
        f"| {name} | {float(value):.4g} |" if np.isfinite(float(value)) else f"| {name} | n/a |"
        for name, value in rows.items()
    ]
    return [f"| {header[0]} | {header[1]} |", "|---|---:|", *body, ""]
