"""A one-directory summary of an annotated target: figures, metrics and ``report.md``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from . import metrics, pl
from ._anndata.detect import anomaly_rates, keys, run_batch_key
from ._atomic import atomic_path
from ._constants import KEY_ADDED
from ._logging import NEST

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_report"]

MIN_UMAP_CELLS = 200
"""Cells from which the report draws a UMAP by default (its numba start-up costs 10-20 s
per process, which tiny targets, as in the tests, do without)."""
UMAP_MAX_CELLS = 50_000
"""Cells the report's UMAP lays out at most (a random sample of larger targets)."""


def write_report(
    adata: AnnData,
    out_dir: Path,
    *,
    key: str = KEY_ADDED,
    label_key: str | None = None,
    truth_key: str | None = None,
    batch_key: str | None = None,
    umap: bool | None = None,
    overwrite: bool = True,
) -> Path:
    """Write figures and a Markdown summary of an :meth:`ACsleuth.run` result to ``out_dir``.

    Parameters
    ----------
    adata
        Target annotated by :meth:`ACsleuth.run` (or the ``tl`` tools, subtyping included);
        left unchanged.
    out_dir
        Existing directory to write ``report.md`` and its figures into: ``scores.png``
        (histogram), ``score_groups.png`` (violins per label, else per call), ``umap.png``
        (see ``umap``; at most :data:`UMAP_MAX_CELLS` cells drawn),
        ``batches.png`` (with a batch key), ``losses.png`` (when ``uns[key]`` has the
        training history), ``subtypes.png`` and, with ``label_key``, ``confusion.png``.
    key
        The ``key_added`` of the run.
    label_key
        ``obs`` column of true labels: groups the score violins, colours a UMAP panel, and
        is compared with the subtypes (confusion heatmap; NMI, ARI and F1 x NMI given
        ``truth_key``).
    truth_key
        Boolean ``obs`` column of the true anomalies: adds AUROC, AP and F1 of the calls.
    batch_key
        ``obs`` column of batches (per-batch anomaly rates, a UMAP panel); default: the
        run's (``uns[key]["params"]``).
    umap
        Draw ``umap.png``: ``None`` when there are at least :data:`MIN_UMAP_CELLS` cells;
        ``True`` from 4 cells on; ``False`` never.
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
    batch_key, umap, notes = _choices(adata, key, batch_key, umap)
    _check_keys(adata, key, label_key, truth_key, batch_key)
    scores = _metrics(adata, key=key, label_key=label_key, truth_key=truth_key)
    figures = _figures(adata, key, label_key, batch_key, umap, notes)
    paths = [out_dir / name for name in (*figures, "report.md")]
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist; pass overwrite=True to replace them")
    for name, (_, draw) in figures.items():
        _save(draw(), out_dir / name)
    titles = {name: title for name, (title, _) in figures.items()}
    text = _markdown(adata, key, scores, notes, titles, batch_key)
    report = out_dir / "report.md"
    with atomic_path(report, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return report


def _choices(
    adata: AnnData, key: str, batch_key: str | None, umap: bool | None
) -> tuple[str | None, bool, list[str]]:
    """The batch key and whether to draw the UMAP (see :func:`write_report`), and notes on
    what is left out."""
    notes = []
    if batch_key is None and run_batch_key(adata, key) is not None:
        batch_key = run_batch_key(adata, key)
        if batch_key not in adata.obs:
            notes.append(f"Batches left out: the run's batch_key {batch_key!r} is not in obs.")
            batch_key = None
    smallest = MIN_UMAP_CELLS if umap is None else 4
    if umap is not False and adata.n_obs < smallest:
        notes.append(f"UMAP skipped: {adata.n_obs} cells (fewer than {smallest}).")
    return batch_key, umap is not False and adata.n_obs >= smallest, notes


def _figures(
    adata: AnnData,
    key: str,
    label_key: str | None,
    batch_key: str | None,
    umap: bool,
    notes: list[str],
) -> dict[str, tuple[str, Callable[[], Figure]]]:
    """The report's figures: file name -> caption, drawing; a note for each left out."""
    anomaly = adata.obs[keys(key).anomaly].to_numpy(dtype=bool)
    name = str(adata.uns.get(key, {}).get("score", "anomaly"))
    by = label_key or "anomaly call"
    figures: dict[str, tuple[str, Callable[[], Figure]]] = {
        "scores.png": (
            f"Histogram of the {name} score per anomaly call, threshold dashed",
            lambda: pl.scores(adata, key=key, return_fig=True),
        ),
        "score_groups.png": (
            f"The {name} score per {by}, threshold dashed",
            lambda: pl.score_groups(adata, key=key, groupby=label_key, return_fig=True),
        ),
    }
    if umap:
        sampled = f" ({UMAP_MAX_CELLS} of {adata.n_obs} cells, drawn at random)"
        panels = ["call", "subtype", *(k for k in (batch_key, label_key) if k is not None)]
        figures["umap.png"] = (
            f"UMAP of the embedding by {', '.join(panels)}"
            + (sampled if adata.n_obs > UMAP_MAX_CELLS else ""),
            lambda: pl.umap(
                adata, key=key, color=panels, max_cells=UMAP_MAX_CELLS, return_fig=True
            ),
        )
    if batch_key is not None:
        figures["batches.png"] = (
            f"Anomalies called per {batch_key}",
            lambda: pl.batch_rates(adata, key=key, batch_key=batch_key, return_fig=True),
        )
    if adata.uns.get(key, {}).get("history"):
        figures["losses.png"] = (
            "Training losses per epoch",
            lambda: pl.losses(adata, key=key, return_fig=True),
        )
    figures["subtypes.png"] = (
        "Subtype sizes",
        lambda: pl.subtypes(adata, key=key, return_fig=True),
    )
    if label_key is not None and anomaly.any():
        figures["confusion.png"] = (
            f"Subtypes x {label_key}",
            lambda: pl.subtypes(
                adata, key=key, kind="confusion", label_key=label_key, return_fig=True
            ),
        )
    elif label_key is not None:
        notes.append("Confusion heatmap skipped: no predicted anomalies.")
    return figures


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


def _check_keys(
    adata: AnnData, key: str, label_key: str | None, truth_key: str | None, batch_key: str | None
) -> None:
    """Fail before writing anything when a needed annotation is missing."""
    for column in (keys(key).score, keys(key).anomaly, keys(key).subtype):
        if column not in adata.obs:
            raise KeyError(
                f"obs[{column!r}] is missing; run ACsleuth.run (or acsleuth.tl.score_anomalies "
                "and acsleuth.tl.subtype_anomalies) first"
            )
    if keys(key).embedding not in adata.obsm:
        raise KeyError(f"obsm['X_{key}'] is missing; run ACsleuth.run first")
    for name, column in (
        ("label_key", label_key),
        ("truth_key", truth_key),
        ("batch_key", batch_key),
    ):
        if column is not None and column not in adata.obs:
            raise KeyError(f"{name} {column!r} is not an obs column")


def _save(fig: Figure, path: Path) -> None:
    """Save ``fig`` as PNG through a temporary file, then close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def _markdown(
    adata: AnnData,
    key: str,
    scores: dict[str, float],
    notes: list[str],
    figures: dict[str, str],
    batch_key: str | None,
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
        f"| score | {uns.get('score', 'n/a')} |",
        f"| threshold | {'n/a' if threshold is None else f'{float(threshold):.4g}'} |",
        f"| subtypes | {uns.get('n_subtypes', 'n/a')} |",
        *(f"| {name} | {uns[name]} |" for name in ("version", "backend", "device") if name in uns),
        "",
        *_parameters(uns.get("params", {})),
        "## Silhouette curve",
        "",
    ]
    curve = dict(sorted(uns.get("silhouette_curve", {}).items(), key=lambda kv: int(kv[0])))
    if len(curve):
        lines += _table(("k", "silhouette"), curve)
    else:
        lines += ["Not computed (fixed number of subtypes).", ""]
    if batch_key is not None:
        lines += _batch_table(adata, key, batch_key)
    lines += ["## Timings", ""]
    timings = uns.get("timings", {})
    lines += _timings_table(timings) if len(timings) else ["None recorded.", ""]
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


def _batch_table(adata: AnnData, key: str, batch_key: str) -> list[str]:
    """Markdown lines of the anomalies called per batch."""
    table = anomaly_rates(adata, batch_key, key)
    rows = [
        f"| {batch} | {int(row.cells)} | {int(row.anomalies)} | {row.rate:.1%} |"
        for batch, row in table.iterrows()
    ]
    header = [f"| {batch_key} | cells | anomalies called | rate |", "|---|---:|---:|---:|"]
    return [f"## Anomalies per {batch_key}", "", *header, *rows, ""]


def _timings_table(timings: dict) -> list[str]:
    """Markdown lines of the seconds per stage, each stage followed by its sub-stages (the
    keys ``"stage > sub-stage"`` of :func:`acsleuth._logging.stage_timer`), in run order
    as recorded, with the total of the outermost stages."""
    children: dict[str, list[str]] = {}
    for name in timings:
        parent, _, _ = name.rpartition(NEST)
        children.setdefault(parent, []).append(name)

    def rows(parent: str, depth: int) -> list[str]:
        out = []
        for name in children.get(parent, []):
            label = name.rpartition(NEST)[2]
            cells = f"{label} | " if depth == 0 else f" | {'↳ ' * (depth - 1)}{label}"
            out.append(f"| {cells} | {float(timings[name]):.2f} |")
            out += rows(name, depth + 1)
        return out

    total = sum(float(timings[name]) for name in children.get("", []))
    return [
        "| stage | sub-stage | seconds |",
        "|---|---|---:|",
        *rows("", 0),
        f"| **total** (of the stages) | | **{total:.2f}** |",
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
