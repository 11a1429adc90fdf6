"""Tools in scanpy style: take an AnnData first, write results into it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from . import ops
from ._anndata import add_timings, annotated
from ._anndata import annotate as annotate_contract
from ._anndata import detect as contract
from ._constants import KEY_ADDED, Kin, Score

if TYPE_CHECKING:
    from .model import ACsleuth
    from .train.contrastive import OpenWorldConfig


def score_anomalies(
    target: AnnData,
    model: ACsleuth,
    *,
    score: Score | None = None,
    batch_key: str | None = None,
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
    adata = annotated(target, copy, "score_anomalies")
    result = model.evaluate(adata, score=score, batch_key=batch_key)
    contract.write_scores(
        adata, result, model.params, backend=ops.backend(model.device),
        timings={**model.timings_, **result.timings}, score=score, key_added=key_added,
    )
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


def annotate(
    target: AnnData,
    reference: AnnData,
    *,
    label_key: str,
    n_types: int | Literal["auto"],
    key_added: str = annotate_contract.KEY_ADDED,
    copy: bool = False,
    seed: int = 0,
    device: str = "cpu",
    config: OpenWorldConfig | None = None,
) -> AnnData | None:
    """Open-world annotation (scDET, docs/method.md §8.2): label target cells of the reference's
    types, and group cells of types the reference lacks into ``novel_1``, ``novel_2``, ...

    Fits an :class:`~acsleuth.OpenWorldAnnotator` on ``reference`` (labelled) and ``target``
    (unlabelled); neither input is modified unless ``target`` is written into (``copy=False``).

    Parameters
    ----------
    target
        Cells to annotate; genes are matched to the reference's by name.
    reference
        Labelled cells, types in ``obs[label_key]``.
    label_key
        ``obs`` column of ``reference`` with the cell types.
    n_types
        Number of types in reference and target together (at least the reference's), or
        ``"auto"``: the K of best silhouette of k-means on 50 principal components, tried from
        the reference's number of types to 8 more.
    key_added
        Prefix of every key written.
    copy
        Return an annotated copy instead of writing into ``target``.
    seed, device, config
        Seed, torch device and settings (:class:`~acsleuth.train.contrastive.OpenWorldConfig`).

    Returns
    -------
    ``None`` (or the copy with ``copy=True``), having written

    - ``obs[key_added]``: reference type name for seen cells, ``"novel_1"``, ``"novel_2"``, …
      (by decreasing size) for cells of new types
    - ``obs[f"{key_added}_novel"]``: bool, the cell's type is not in the reference
    - ``obs[f"{key_added}_confidence"]``: the largest class probability
    - ``obsm[f"X_{key_added}"]``: the 128-d embedding
    - ``obsm[f"{key_added}_proba"]``: class probabilities (columns: ``uns[key_added]["classes"]``)
    - ``uns[key_added]``: ``classes``, ``cluster_map`` (class index -> name), ``n_seen``,
      ``priors`` (estimates of the class distribution over training), ``params``, ``seed``,
      ``timings`` and, with ``n_types="auto"``, ``n_types_scores``
    """
    from .model.annotator import OpenWorldAnnotator

    adata = annotated(target, copy, "annotate")
    model = OpenWorldAnnotator(n_types, config=config, seed=seed, device=device)
    model.fit(reference, adata, label_key=label_key)
    annotate_contract.write_annotation(adata, model.predict(adata), model, key_added)
    return adata if copy else None
