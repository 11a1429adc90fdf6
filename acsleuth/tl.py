"""Tools in scanpy style: take an AnnData first, write results into it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from . import ops
from ._anndata import add_timings, annotated
from ._anndata import detect as contract
from ._constants import KEY_ADDED, Kin, Score

if TYPE_CHECKING:
    from .model import ACsleuth


def score_anomalies(
    target: AnnData,
    model: ACsleuth,
    *,
    score: Score | None = None,
    batch_key: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    key_added: str = KEY_ADDED,
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
    layer, use_raw
        Score ``layers[layer]`` (e.g. ``"counts"``), or ``raw.X`` with ``use_raw=True``,
        instead of ``X``.
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
    - ``uns[key_added]``: ``params`` (the model's settings, with this call's ``batch_key`` and
      ``layer``; settings that are None are left out), ``score``, ``threshold``, ``version``,
      ``backend``, ``device``, ``seed`` and ``timings`` (seconds per stage)

    A cell's ``"mmd"`` score depends on the other cells of ``target``: the predictor is
    trained on the cells it scores.
    """
    adata = annotated(target, copy, "score_anomalies")
    result = model.evaluate(_expression(adata, layer, use_raw), score=score, batch_key=batch_key,
                            layer=layer)
    contract.write_scores(
        adata, result, {**model.params, "batch_key": batch_key, "layer": layer,
                        "use_raw": use_raw or None},
        backend=ops.backend(model.device), timings={**model.timings_, **result.timings},
        score=score, key_added=key_added,
    )
    adata.uns[key_added]["device"] = str(model.device)
    return adata if copy else None


def correct_batches(
    target: AnnData,
    model: ACsleuth,
    *,
    reference: Any,
    batch_key: str | None = None,
    kin: Kin = "nearest",
    key_added: str = KEY_ADDED,
    copy: bool = False,
) -> AnnData | None:
    """Batch-correct ``target`` into the reference's space (stages II and III, docs/method.md §2-§3).

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
    adata = annotated(target, copy, "correct_batches")
    anomaly = contract.anomaly_calls(adata, key_added, "correct_batches")
    timings: dict[str, float] = {}
    corrected = model.correct(
        adata, reference, normal=~anomaly, batch_key=batch_key, kin=kin, timings=timings
    )
    contract.write_corrected(adata, corrected, model.genes_, key_added)
    add_timings(adata, key_added, timings)
    return adata if copy else None


def subtype_anomalies(
    target: AnnData,
    model: ACsleuth,
    *,
    n_subtypes: int | Literal["auto"] = "auto",
    key_added: str = KEY_ADDED,
    copy: bool = False,
) -> AnnData | None:
    """Subtype the anomalies of ``target`` (stage IV, docs/method.md §4).

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
    adata = annotated(target, copy, "subtype_anomalies")
    anomaly = contract.anomaly_calls(adata, key_added, "subtype_anomalies")
    timings: dict[str, float] = {}
    x = contract.corrected_expression(adata, model.genes_, key_added, np.flatnonzero(anomaly))
    result = model.subtype(x, n_subtypes=n_subtypes, timings=timings)
    contract.write_subtypes(adata, anomaly, result, key_added)
    add_timings(adata, key_added, timings)
    return adata if copy else None


def _expression(adata: AnnData, layer: str | None, use_raw: bool) -> AnnData:
    """``adata``, or with ``use_raw`` its ``raw`` as an AnnData (same cells, raw genes)."""
    if not use_raw:
        return adata
    if layer is not None:
        raise ValueError("use_raw=True and layer=... name two matrices; pass one of them")
    if adata.raw is None:
        raise ValueError("use_raw=True but adata.raw is None; pass layer=... or score X")
    return adata.raw.to_adata()

