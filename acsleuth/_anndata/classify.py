"""CellTypeClassifier's (CLAMS) keys in AnnData: where the classification of target cells is
written and read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._logging import logger
from . import params_record

if TYPE_CHECKING:
    from ..model.classifier import CellTypeClassifier, Classification

UNASSIGNED = "unassigned"
KEY = "acsleuth_class"


def keys(key_added: str) -> dict[str, str]:
    """Every key :func:`write_classification` writes, by role."""
    return {
        "label": key_added,
        "confidence": f"{key_added}_confidence",
        "ood_score": f"{key_added}_ood_score",
        "ood": f"{key_added}_ood",
        "proba": f"{key_added}_proba",
        "uns": key_added,
    }


def corrected_layer(adata: AnnData, corrected_key: str | None) -> str | None:
    """``layers[f"{corrected_key}_corrected"]`` when :func:`acsleuth.tl.correct_batches` wrote
    it there (the batch-corrected expression to classify), else None (``X`` is used)."""
    if corrected_key is None:
        return None
    name = f"{corrected_key}_corrected"
    if name in adata.layers:
        logger.info("classify: using the batch-corrected expression in layers[%r]", name)
        return name
    if name in adata.obsm:
        logger.warning(
            "classify: obsm[%r] holds corrected expression on another gene panel; "
            "classifying X instead",
            name,
        )
    return None


def write_classification(
    adata: AnnData,
    model: CellTypeClassifier,
    result: Classification,
    *,
    key_added: str,
    reject: bool,
    layer: str | None,
) -> None:
    """Write the per-cell outputs and ``uns[key_added]`` (see :func:`acsleuth.tl.classify`)."""
    from .. import __version__

    k = keys(key_added)
    classes = list(model.classes_)
    codes = pd.Categorical(result.labels, categories=classes).codes.astype(np.int64)
    if reject:
        codes[result.ood] = len(classes)
        classes = [*classes, UNASSIGNED]
    index = adata.obs_names
    adata.obs[k["label"]] = pd.Categorical.from_codes(codes, categories=classes)
    adata.obs[k["confidence"]] = pd.Series(result.confidence.astype(np.float32), index=index)
    adata.obs[k["ood_score"]] = pd.Series(result.ood_score.astype(np.float32), index=index)
    adata.obs[k["ood"]] = pd.Series(result.ood, index=index)
    adata.obsm[k["proba"]] = result.proba.astype(np.float32)
    adata.uns[k["uns"]] = {
        "classes": list(model.classes_),
        "validation_accuracy": model.validation_accuracy_,
        "validation_ece": model.validation_ece_,
        "validation_ece_uncalibrated": model.validation_ece_uncalibrated_,
        "ood_score": model.config.ood_score,
        "ensemble_size": 1 + len(model.members_),
        "threshold": model.threshold_,
        "divergences": model.divergences_,
        "best_epoch": model.best_epoch_,
        "reject": bool(reject),
        "input": layer or "X",
        "params": params_record(
            {k: list(v) if isinstance(v, tuple) else v for k, v in model.params.items()}  # h5ad
        ),
        "version": __version__,
        "timings": {**model.timings_, **result.timings},
    }


def read_scores(adata: AnnData, key_added: str) -> tuple[pd.Series, np.ndarray, float | None, str]:
    """``(predicted type, OOD score, threshold, the score's name)`` written under
    ``key_added``, for plots."""
    k = keys(key_added)
    if k["ood_score"] not in adata.obs:
        raise KeyError(
            f"obs[{k['ood_score']!r}] is missing; run acsleuth.tl.classify(adata, reference, "
            f"label_key=..., key_added={key_added!r}) first"
        )
    record = adata.uns.get(k["uns"], {})
    values = adata.obs[k["ood_score"]].to_numpy(float)
    name = str(record.get("ood_score", "OOD score"))
    return adata.obs[k["label"]], values, record.get("threshold"), name
