"""Tools in scanpy style: take an AnnData first, write results into it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from . import ops

if TYPE_CHECKING:
    from .model import ACsleuth, Score, ScoreResult
    from .stages.subtype import SubtypeResult


def score_anomalies(
    target: AnnData,
    model: ACsleuth,
    *,
    score: Score | None = None,
    batch_key: str | None = None,
    key_added: str = "acsleuth",
    copy: bool = False,
) -> AnnData | None:
    """Score and call anomalies in ``target`` with a fitted :class:`~acsleuth.ACsleuth`.

    Parameters
    ----------
    target
        Cells to screen (in memory or backed); genes are matched to the model's by name.
    model
        A fitted (or loaded) model.
    score
        Score type; default: the model's.
    batch_key
        ``obs`` column of target batches: the residuals behind the ``"scaled"`` and
        ``"mmd"`` scores are centred per batch (see :meth:`ACsleuth.evaluate`).
    key_added
        Prefix of every key written.
    copy
        Return an annotated copy instead of writing into ``target``.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``), having written

    - ``obs[f"{key_added}_score"]``: anomaly score, higher = more anomalous
    - ``obs[f"{key_added}_anomaly"]``: bool anomaly call
    - ``obsm[f"X_{key_added}"]``: encoder embedding, ``(n_obs, 256)``
    - ``obsm[f"{key_added}_scores"]``: every score type computed (a DataFrame, a column each)
    - ``uns[key_added]``: ``params``, ``score``, ``threshold``, ``version``, ``backend``,
      ``seed`` and ``timings`` (seconds per stage)
    """
    adata = _annotated(target, copy, "score_anomalies")
    result = model.evaluate(adata, score=score, batch_key=batch_key)
    _write_scores(adata, model, result, score, key_added)
    return adata if copy else None


def correct_batches(
    target: AnnData,
    model: ACsleuth,
    *,
    reference: Any,
    batch_key: str | None = None,
    kin: Literal["nearest", "learned"] = "nearest",
    key_added: str = "acsleuth",
    copy: bool = False,
) -> AnnData | None:
    """Batch-correct ``target`` into the reference's space (stages II and III, SPEC §2-§3).

    Needs the anomaly calls of :func:`score_anomalies` (run it first with the same
    ``key_added``): only cells called normal train the style transfer.

    Parameters
    ----------
    target
        Annotated cells; genes are matched to the model's by name.
    model
        A fitted (or loaded) model.
    reference
        The normal reference cells (AnnData or path) that kin are drawn from.
    batch_key
        ``obs`` column of the target batches; one batch when None.
    kin
        ``"nearest"`` (cosine nearest neighbour) or ``"learned"`` (the paper's mapping).
    key_added
        Prefix of every key read and written.
    copy
        Return an annotated copy instead of writing into ``target``.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``), having written

    - ``layers[f"{key_added}_corrected"]``: float32 corrected expression on the model's
      panel when ``target``'s genes are that panel in order, else
      ``obsm[f"{key_added}_corrected"]`` (``(n_obs, n_panel_genes)``); ``obs[...]`` is read only
    - ``uns[key_added]["timings"]``: ``"kin"`` and ``"style"`` added
    """
    adata = _annotated(target, copy, "correct_batches")
    anomaly = _anomaly_calls(adata, key_added, "correct_batches")
    timings: dict[str, float] = {}
    corrected = model.correct(
        adata, reference, normal=~anomaly, batch_key=batch_key, kin=kin, timings=timings
    )
    _write_corrected(adata, model, corrected, key_added)
    _add_timings(adata, key_added, timings)
    return adata if copy else None


def subtype_anomalies(
    target: AnnData,
    model: ACsleuth,
    *,
    n_subtypes: int | Literal["auto"] = "auto",
    key_added: str = "acsleuth",
    copy: bool = False,
) -> AnnData | None:
    """Subtype the anomalies of ``target`` (stage IV, SPEC §4).

    Needs ``obs[f"{key_added}_anomaly"]`` from :func:`score_anomalies`. Uses the corrected
    expression of :func:`correct_batches` when present, else the uncorrected expression
    on the model's panel.

    Parameters
    ----------
    target
        Annotated cells; genes are matched to the model's by name.
    model
        A fitted (or loaded) model.
    n_subtypes
        Number of subtypes, or ``"auto"`` (best silhouette over ``2..10``).
    key_added
        Prefix of every key read and written.
    copy
        Return an annotated copy instead of writing into ``target``.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``), having written

    - ``obs[f"{key_added}_subtype"]``: categorical of ``"0"``, ``"1"``, ... (``"0"`` the
      largest), NaN for normal cells
    - ``obsm[f"X_{key_added}_subtype"]``: the embedding DESC clustered (principal components
      or fused ``z*``, see ``subtype_embedding``), NaN rows for normal cells
    - ``uns[key_added]``: ``n_subtypes``, ``silhouette_curve`` (``{"k": silhouette}``, empty
      unless ``"auto"``) and ``"subtype"`` timings
    """
    adata = _annotated(target, copy, "subtype_anomalies")
    anomaly = _anomaly_calls(adata, key_added, "subtype_anomalies")
    timings: dict[str, float] = {}
    x = _corrected_expression(adata, model, key_added, np.flatnonzero(anomaly))
    result = model.subtype(x, n_subtypes=n_subtypes, timings=timings)
    _write_subtypes(adata, anomaly, result, key_added)
    _add_timings(adata, key_added, timings)
    return adata if copy else None


def _corrected_expression(
    adata: AnnData, model: ACsleuth, key_added: str, rows: np.ndarray
) -> np.ndarray:
    """Rows ``rows`` of the corrected expression written under ``key_added``, else of the
    prepared (uncorrected) expression on the model's panel: float32 ``(len(rows), G)``."""
    from .data import prepare

    name = f"{key_added}_corrected"
    for slot in (adata.layers, adata.obsm):
        if name in slot:
            return np.asarray(slot[name][rows], dtype=np.float32)
    return prepare(adata, genes=model.genes_, name="target").rows(rows)


def _annotated(target: AnnData, copy: bool, tool: str) -> AnnData:
    if not isinstance(target, AnnData):
        raise TypeError(f"{tool}: target must be an AnnData, got {type(target).__name__}")
    return target.copy() if copy else target


def _anomaly_calls(adata: AnnData, key_added: str, tool: str) -> np.ndarray:
    column = f"{key_added}_anomaly"
    if column not in adata.obs:
        raise KeyError(
            f"{tool}: obs[{column!r}] is missing; run acsleuth.tl.score_anomalies(adata, model, "
            f"key_added={key_added!r}) first"
        )
    return adata.obs[column].to_numpy(dtype=bool)


def _add_timings(adata: AnnData, key_added: str, timings: dict[str, float]) -> None:
    uns = adata.uns.setdefault(key_added, {})
    uns["timings"] = {**uns.get("timings", {}), **timings}


def _write_scores(
    adata: AnnData, model: ACsleuth, result: ScoreResult, score: Score | None, key_added: str
) -> None:
    """Write ``obs`` score and call, ``obsm`` embedding and scores, and ``uns[key_added]``."""
    from . import __version__

    adata.obs[f"{key_added}_score"] = pd.Series(result.score, index=adata.obs_names)
    adata.obs[f"{key_added}_anomaly"] = pd.Series(result.anomaly, index=adata.obs_names)
    adata.obsm[f"X_{key_added}"] = result.embedding.astype(np.float32)
    adata.obsm[f"{key_added}_scores"] = pd.DataFrame(result.scores, index=adata.obs_names)
    adata.uns[key_added] = {
        "params": {k: ("None" if v is None else v) for k, v in model.params.items()},
        "score": score or model.params["score"],
        "threshold": result.threshold,
        "version": __version__,
        "backend": ops.backend(),
        "seed": model.params["random_state"],
        "timings": {**model.timings_, **result.timings},
    }


def _corrected_slot(adata: AnnData, model: ACsleuth) -> str:
    """Where corrected expression goes: ``"layers"`` when ``adata``'s genes are the model's
    panel in order, else ``"obsm"``."""
    return "layers" if list(map(str, adata.var_names)) == list(model.genes_) else "obsm"


def _write_corrected(adata: AnnData, model: ACsleuth, corrected: np.ndarray, key_added: str) -> None:
    """Store ``corrected`` under :func:`_corrected_slot` (replacing an earlier one anywhere)."""
    name = f"{key_added}_corrected"
    for slot in (adata.layers, adata.obsm):
        if name in slot:
            del slot[name]
    getattr(adata, _corrected_slot(adata, model))[name] = corrected


def _write_subtypes(
    adata: AnnData, anomaly: np.ndarray, result: SubtypeResult | None, key_added: str
) -> None:
    """Subtypes of the anomalies (``result`` None: no anomaly, nothing subtyped)."""
    n_subtypes = 0 if result is None else result.n_subtypes
    codes = np.full(adata.n_obs, -1, dtype=np.int64)
    width = 0 if result is None else result.embedding.shape[1]
    embedding = np.full((adata.n_obs, width), np.nan, dtype=np.float32)
    if result is not None:
        codes[anomaly] = result.labels
        embedding[anomaly] = result.embedding
    categories = [str(k) for k in range(n_subtypes)]
    adata.obs[f"{key_added}_subtype"] = pd.Categorical.from_codes(codes, categories=categories)
    adata.obsm[f"X_{key_added}_subtype"] = embedding
    curve = {} if result is None or result.silhouette_curve is None else result.silhouette_curve
    uns = adata.uns.setdefault(key_added, {})
    uns["n_subtypes"] = n_subtypes
    uns["silhouette_curve"] = {str(k): float(v) for k, v in curve.items()}
