"""Tools in scanpy style: take an AnnData first, write results into it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from . import ops
from ._anndata import add_timings, annotated
from ._anndata import annotate as annotate_contract
from ._anndata import detect as contract
from ._anndata.classify import KEY as CLASSIFY_KEY
from ._constants import KEY_ADDED, Kin, Score
from .stages.explain import ExplainConfig

if TYPE_CHECKING:
    from .model import ACsleuth, CellTypeClassifier
    from .train.contrastive import OpenWorldConfig


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
        ``obs`` column of target batches (how they are handled: :meth:`ACsleuth.evaluate`).
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
      ``backend``, ``device``, ``seed``, ``timings`` (seconds per stage) and, with a
      ``batch_key``, ``batch_scale`` (each batch's per-gene log-scale, batches x genes)

    A cell's ``"mmd"`` score depends on the other cells of ``target``: the predictor is
    trained on the cells it scores.
    """
    adata = annotated(target, copy, "score_anomalies")
    result = model.evaluate(
        _expression(adata, layer, use_raw), score=score, batch_key=batch_key, layer=layer
    )
    contract.write_scores(
        adata,
        result,
        {**model.params, "batch_key": batch_key, "layer": layer, "use_raw": use_raw or None},
        backend=ops.backend(model.device),
        timings={**model.timings_, **result.timings},
        score=score,
        key_added=key_added,
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
        Number of subtypes, or ``"auto"`` (the smallest ``k`` in ``2..10`` within 0.01 of the
        best silhouette).
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


def explain_groups(
    adata: AnnData,
    *,
    groupby: str,
    embedding: Any = "whitened",
    mode: Literal["one_vs_rest", "one_vs_one"] = "one_vs_rest",
    reference: str | None = None,
    groups: list[str] | None = None,
    n_genes: int = 50,
    use_raw: bool | None = None,
    layer: str | None = None,
    config: ExplainConfig | None = None,
    key_added: str = KEY_ADDED,
    copy: bool = False,
) -> AnnData | None:
    """Explain groups of cells with small, signed gene panels (ACE, docs/method.md §8.3).

    For each cell of a group, the smallest (L1) change of its expression that moves it out
    of its group in ``embedding`` (the neuralised k-means on the groups' mean embeddings);
    a gene's score is its mean ``|delta|`` over the group's cells (at most
    ``config.max_cells``, a seeded sample), its rank fused by default with the rank against
    the group's complement (``config.panel``, docs/method.md §8.3).

    Parameters
    ----------
    adata
        Cells with groups in ``obs[groupby]`` (cells with a missing group are left out).
    groupby
        ``obs`` column of the groups (any labels; at least 2 groups).
    embedding
        ``"whitened"`` (every principal component of the expression, whitened down to a
        typical gene's variance, ``config.whiten_floor``: genes that only sum others lose
        their weight), ``"pca"`` (the first ``config.n_components`` principal components),
        an ``obsm`` key (a least-squares linear map from the expression to it is fitted; its
        R^2 is recorded), a fitted
        :class:`~acsleuth.ACsleuth` (its encoder; the expression must be on its genes) or a
        callable mapping ``(B, G)`` float32 tensors to ``(B, d)``.
    mode
        ``"one_vs_rest"`` (out of the group, to whichever group is closest) or
        ``"one_vs_one"`` (into ``reference``).
    reference
        The target group of ``"one_vs_one"``.
    groups
        Groups to explain (default: all).
    n_genes
        Genes kept per group, best first.
    use_raw, layer
        Expression read: ``layers[layer]``, else ``.raw`` when present (unless
        ``use_raw=False``), else ``X``; perturbations are in its units (log-normalised
        expression is expected).
    config
        Solver and model settings (:class:`~acsleuth.stages.explain.ExplainConfig`).
    key_added
        Prefix: the panels go to ``uns[f"{key_added}_explain"]``.
    copy
        Return an annotated copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``); reads ``obs[groupby]`` and writes
    ``uns[f"{key_added}_explain"]`` in the layout of ``sc.tl.rank_genes_groups`` (so
    ``sc.get.rank_genes_groups_df(adata, group, key=...)`` reads it):

    - ``names``, ``scores`` (fused rank score; mean ``|delta|`` if not fused), ``direction``
      (+1 enriched, -1 depleted), ``mean_delta``, ``logfoldchanges`` (as scanpy computes
      them), ``pvals`` and ``pvals_adj`` (NaN: ACE has no test): record arrays, a field per group
    - ``flipped`` and ``mean_l1``: per group, the fraction of cells moved out of the group
      and the mean ``||delta||_1``; ``n_cells`` explained
    - ``params``: ``method="ace"``, ``groupby``, ``reference``, ``mode``, the embedding,
      the head and every setting of ``config``
    """
    from ._anndata.explain import explain_adata, expression

    adata = annotated(adata, copy, "explain_groups")
    config = ExplainConfig() if config is None else config
    x, genes = expression(adata, use_raw=use_raw, layer=layer)
    explain_adata(
        adata,
        groupby=groupby,
        embedding=embedding,
        mode=mode,
        reference=reference,
        groups=groups,
        n_genes=n_genes,
        x=x,
        genes=genes,
        config=config,
        key_added=key_added,
        extra={
            "use_raw": adata.raw is not None and use_raw is not False and layer is None,
            "layer": "None" if layer is None else layer,
        },
    )
    return adata if copy else None


def explain_subtypes(
    target: AnnData,
    model: ACsleuth,
    *,
    n_genes: int = 50,
    corrected: Any = None,
    layer: str | None = None,
    config: ExplainConfig | None = None,
    key_added: str = KEY_ADDED,
    copy: bool = False,
) -> AnnData | None:
    """Explain the anomaly subtypes of ``target`` with signed gene panels (ACE, docs/method.md §8.3).

    Needs :func:`subtype_anomalies` (or :meth:`ACsleuth.run`) with the same ``key_added``.
    The subtypes are explained by the model that found them: DESC's Student-t assignment
    to its centroids (``uns[key_added]["subtype_centroids"]``; the subtypes' mean
    embeddings when absent, with the neuralised k-means) on the embedding DESC clustered,
    mapped from the anomalies' corrected expression (the model's genes) by the
    least-squares linear map, which is exact for the principal components.

    Parameters
    ----------
    target
        Annotated cells.
    model
        The fitted model that subtyped them.
    n_genes
        Genes kept per subtype.
    corrected
        The corrected expression of every cell when it is not in ``target`` (any array taking
        row indices, e.g. the ``h5py`` dataset :meth:`ACsleuth.run` streamed it into);
        default: what :func:`subtype_anomalies` read.
    layer
        Without corrected expression, read ``target.layers[layer]`` instead of ``X`` (the
        matrix the model scored).
    config
        Solver settings (:class:`~acsleuth.stages.explain.ExplainConfig`).
    key_added
        Prefix of the keys read and written.
    copy
        Return an annotated copy instead of writing into ``target``.

    Returns
    -------
    ``None`` (or the copy); reads ``obs[f"{key_added}_subtype"]`` and
    ``obsm[f"X_{key_added}_subtype"]`` and writes ``uns[f"{key_added}_explain"]`` as
    :func:`explain_groups` does (``params["groupby"]`` is ``f"{key_added}_subtype"``).
    """
    from ._anndata.explain import explain_subtypes_into

    adata = annotated(target, copy, "explain_subtypes")
    explain_subtypes_into(
        adata,
        model.genes_,
        key_added=key_added,
        n_genes=n_genes,
        corrected=corrected,
        layer=layer,
        config=ExplainConfig() if config is None else config,
    )
    return adata if copy else None


def classify(
    target: AnnData,
    reference: AnnData | str | os.PathLike | None = None,
    *,
    label_key: str | None = None,
    key_added: str = CLASSIFY_KEY,
    reject: bool = False,
    model: CellTypeClassifier | None = None,
    corrected_key: str | None = KEY_ADDED,
    copy: bool = False,
    **settings: Any,
) -> AnnData | None:
    """Classify ``target`` cells against a labelled ``reference`` with CLAMS (docs/method.md §8.1),
    and score how far each cell is from every known type.

    Bad labels (a missing ``label_key``, missing labels, a type with one cell) are refused
    in one line before any training.

    Parameters
    ----------
    target
        Cells to classify (in memory or backed); genes are matched to the reference's by name.
        When :func:`correct_batches` wrote ``layers[f"{corrected_key}_corrected"]``, that
        batch-corrected expression is classified instead of ``X``.
    reference
        Labelled cells (AnnData or path) to train on; not needed with a fitted ``model``.
    label_key
        ``reference.obs`` column of cell types (at least two types, two cells each, none missing).
    key_added
        Prefix of every key written.
    reject
        Call cells over the OOD threshold ``"unassigned"`` in ``obs[key_added]``.
    model
        A fitted (or loaded) :class:`~acsleuth.CellTypeClassifier`; trained here when None.
    corrected_key
        ``key_added`` of :func:`correct_batches` (None: always classify ``X``).
    copy
        Return an annotated copy instead of writing into ``target``.
    **settings
        Passed to :class:`~acsleuth.CellTypeClassifier` (``epochs``, ``random_state``, ...).

    Returns
    -------
    ``None`` (or the copy with ``copy=True``), having written

    - ``obs[key_added]``: predicted type (categorical; ``"unassigned"`` where ``reject`` and
      the cell is called out of distribution)
    - ``obs[f"{key_added}_confidence"]``: max p(y|x) (of the ensemble, if any: docs/method.md §8.1)
    - ``obs[f"{key_added}_ood_score"]``: higher = more out of distribution; by default
      (``"energy+softmax+knn+type"``) the kept network's standardised energy ``-LSE(x)``,
      negative max softmax and distances to the training cells and to its predicted type's
      (docs/method.md §8.1); ``ood_score="energy"``: ``-LSE(x)`` alone
    - ``obs[f"{key_added}_ood"]``: bool OOD call, score above ``uns[key_added]["threshold"]``
      (the ``ood_quantile``, default 0.95, of the reference's validation cells' scores)
    - ``obsm[f"{key_added}_proba"]``: ``(n_obs, K)`` p(y|x), columns in ``classes`` order
    - ``uns[key_added]``: ``classes``, ``validation_accuracy``, ``validation_ece`` (with the
      fitted temperature; ``validation_ece_uncalibrated`` at temperature 1), ``ood_score``,
      ``ensemble_size``, ``threshold``, ``divergences`` (epochs the divergence guard
      restored, the calibration networks' included), ``best_epoch``, ``reject``, ``input``
      (``"X"`` or the layer classified), ``params``, ``version`` and ``timings``
    """
    from ._anndata.classify import corrected_layer, write_classification
    from .model import CellTypeClassifier

    adata = annotated(target, copy, "classify")
    if model is None:
        if reference is None or label_key is None:
            raise ValueError(
                "classify: give reference= and label_key= (to train), or model= (a fitted classifier)"
            )
        model = CellTypeClassifier(**settings).fit(reference, label_key=label_key)
    elif settings:
        raise TypeError(
            f"classify: {sorted(settings)} set the training of a new model; drop them with model="
        )
    layer = corrected_layer(adata, corrected_key)
    result = model.classify(adata, layer=layer)
    write_classification(adata, model, result, key_added=key_added, reject=reject, layer=layer)
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
        ``"auto"``: the reference's types plus the number of clusters (1 to 8, best
        silhouette) of the target cells the reference leaves unexplained
        (:func:`acsleuth.stages.annotate.estimate_n_types`).
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
    - ``obs[f"{key_added}_confidence"]``: the probability of the label given
    - ``obsm[f"X_{key_added}"]``: the 128-d embedding (of the ensemble's first network)
    - ``obsm[f"{key_added}_proba"]``: class probabilities, the mean over the ensemble's networks
      (columns: ``uns[key_added]["classes"]``)
    - ``uns[key_added]``: ``classes``, ``cluster_map`` (class index -> name), ``n_seen``,
      ``priors`` (estimates of the class distribution over training, ``(networks, estimates,
      classes)``), ``params``, ``seed``,
      ``timings`` and, with ``n_types="auto"``, ``n_types_scores``
    """
    from .model.annotator import OpenWorldAnnotator

    adata = annotated(target, copy, "annotate")
    model = OpenWorldAnnotator(n_types, config=config, seed=seed, device=device)
    model.fit(reference, adata, label_key=label_key)
    annotate_contract.write_annotation(adata, model.predict(adata), model, key_added)
    return adata if copy else None
