"""Evaluation metrics of anomaly detection and subtyping (docs/method.md §6).

Every function takes array-likes of per-cell values (numpy arrays, lists, pandas Series) and
raises ``ValueError`` on mismatched lengths, empty inputs or non-finite scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn import metrics as skm

__all__ = [
    "ari",
    "auroc",
    "average_precision",
    "cluster_accuracy",
    "detection_report",
    "f1",
    "f1_at_ratio",
    "nmi",
    "open_world_accuracy",
    "subtype_scores",
]


def _as_1d(name: str, values: ArrayLike, dtype: type | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _as_bool(name: str, values: ArrayLike) -> np.ndarray:
    array = _as_1d(name, values)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number) and np.isin(array, (0, 1)).all()):
        raise ValueError(f"{name} must be boolean or 0/1, got dtype {array.dtype}")
    return array.astype(bool)


def _as_scores(name: str, values: ArrayLike) -> np.ndarray:
    array = _as_1d(name, values, np.float64)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite values (NaN or infinite)")
    return array


def _as_codes(name: str, values: ArrayLike) -> np.ndarray:
    """Integer codes of any hashable labels; missing labels (NaN, None) are an error."""
    codes, _ = pd.factorize(_as_1d(name, values, object))
    missing = int(np.count_nonzero(codes < 0))
    if missing:
        raise ValueError(f"{name} has {missing} missing labels")
    return codes


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")


def _detection_inputs(is_anomaly: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth = _as_bool("is_anomaly", is_anomaly)
    score = _as_scores("scores", scores)
    _check_lengths(is_anomaly=truth, scores=score)
    if truth.all() or not truth.any():
        kind = "anomalous" if truth.all() else "normal"
        raise ValueError(f"is_anomaly marks every cell {kind}; the metric needs both classes")
    return truth, score


def auroc(is_anomaly: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` (higher = more anomalous)."""
    truth, score = _detection_inputs(is_anomaly, scores)
    return float(skm.roc_auc_score(truth, score))


def average_precision(is_anomaly: ArrayLike, scores: ArrayLike) -> float:
    """Average precision (area under the precision-recall curve) of ``scores``."""
    truth, score = _detection_inputs(is_anomaly, scores)
    return float(skm.average_precision_score(truth, score))


def f1(is_anomaly: ArrayLike, predicted: ArrayLike) -> float:
    """F1 of boolean anomaly calls; 0.0 when there are neither true nor predicted anomalies."""
    truth = _as_bool("is_anomaly", is_anomaly)
    call = _as_bool("predicted", predicted)
    _check_lengths(is_anomaly=truth, predicted=call)
    return float(skm.f1_score(truth, call, zero_division=0.0))


def f1_at_ratio(is_anomaly: ArrayLike, scores: ArrayLike) -> float:
    """F1 when the ``n`` highest scores are called anomalous, ``n`` = number of true anomalies.

    Tied scores are ranked by position: among equal scores the earlier cell is called first.
    """
    truth, score = _detection_inputs(is_anomaly, scores)
    top = np.argsort(-score, kind="stable")[: np.count_nonzero(truth)]
    call = np.zeros_like(truth)
    call[top] = True
    return f1(truth, call)


def nmi(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Normalised mutual information of two labelings (any hashable labels, none missing)."""
    true_codes = _as_codes("labels_true", labels_true)
    pred_codes = _as_codes("labels_pred", labels_pred)
    _check_lengths(labels_true=true_codes, labels_pred=pred_codes)
    return float(skm.normalized_mutual_info_score(true_codes, pred_codes))


def ari(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index of two labelings (any hashable labels, none missing)."""
    true_codes = _as_codes("labels_true", labels_true)
    pred_codes = _as_codes("labels_pred", labels_pred)
    _check_lengths(labels_true=true_codes, labels_pred=pred_codes)
    return float(skm.adjusted_rand_score(true_codes, pred_codes))


def subtype_scores(
    is_anomaly: ArrayLike,
    predicted: ArrayLike,
    true_type: ArrayLike,
    subtype: ArrayLike,
) -> dict[str, float]:
    """Subtyping quality on the cells that are true anomalies and predicted anomalous.

    ``true_type`` and ``subtype`` cover all cells; they may be missing (NaN) outside the
    evaluated cells, e.g. ``obs["acsleuth_subtype"]`` of predicted-normal cells.

    Returns
    -------
    dict
        ``nmi`` and ``ari`` of ``subtype`` against ``true_type`` on the evaluated cells (NaN
        when there are none), ``f1`` of ``predicted``, and ``f1_nmi`` = F1 x NMI (0.0 when no
        cell is evaluated, as F1 is then 0).
    """
    truth = _as_bool("is_anomaly", is_anomaly)
    call = _as_bool("predicted", predicted)
    types = _as_1d("true_type", true_type, object)
    subtypes = _as_1d("subtype", subtype, object)
    _check_lengths(is_anomaly=truth, predicted=call, true_type=types, subtype=subtypes)
    evaluated = truth & call
    f1_score = f1(truth, call)
    if not evaluated.any():
        return {"nmi": np.nan, "ari": np.nan, "f1": f1_score, "f1_nmi": 0.0}
    nmi_score = nmi(types[evaluated], subtypes[evaluated])
    return {
        "nmi": nmi_score,
        "ari": ari(types[evaluated], subtypes[evaluated]),
        "f1": f1_score,
        "f1_nmi": f1_score * nmi_score,
    }


def detection_report(
    is_anomaly: ArrayLike, scores: ArrayLike, predicted: ArrayLike | None = None
) -> dict[str, float]:
    """Detection metrics: ``auroc``, ``ap``, ``f1_at_ratio`` and, given ``predicted``, ``f1``."""
    report = {
        "auroc": auroc(is_anomaly, scores),
        "ap": average_precision(is_anomaly, scores),
        "f1_at_ratio": f1_at_ratio(is_anomaly, scores),
    }
    if predicted is not None:
        report["f1"] = f1(is_anomaly, predicted)
    return report


def cluster_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Accuracy under the best one-to-one map of predicted clusters to true labels (Hungarian).

    Clusters left unmatched (more clusters than labels) count as wrong.
    """
    from scipy.optimize import linear_sum_assignment

    true_codes = _as_codes("labels_true", labels_true)
    pred_codes = _as_codes("labels_pred", labels_pred)
    _check_lengths(labels_true=true_codes, labels_pred=pred_codes)
    overlap = np.zeros((pred_codes.max() + 1, true_codes.max() + 1), dtype=np.int64)
    np.add.at(overlap, (pred_codes, true_codes), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / true_codes.size)


def open_world_accuracy(
    labels_true: ArrayLike, labels_pred: ArrayLike, seen: ArrayLike
) -> dict[str, float]:
    """Open-world annotation accuracy (scDET, SPEC §8.2) on target cells.

    Parameters
    ----------
    labels_true
        True type of every cell.
    labels_pred
        Predicted label: a seen type name, or any other value (e.g. ``"novel_1"``) for a cluster.
    seen
        The seen (reference) type names.

    Returns
    -------
    dict
        ``seen``: plain accuracy on the cells of seen types; ``novel``: :func:`cluster_accuracy`
        on the cells of novel types (NaN when there are none); ``overall``: cluster accuracy of
        all cells under one joint Hungarian matching (it can fall below both).
    """
    truth = _as_1d("labels_true", labels_true, object).astype(str)
    pred = _as_1d("labels_pred", labels_pred, object).astype(str)
    _check_lengths(labels_true=truth, labels_pred=pred)
    is_seen = np.isin(truth, np.asarray(seen, dtype=object).astype(str))
    return {
        "seen": float(np.mean(pred[is_seen] == truth[is_seen])) if is_seen.any() else np.nan,
        "novel": cluster_accuracy(truth[~is_seen], pred[~is_seen]) if (~is_seen).any() else np.nan,
        "overall": cluster_accuracy(truth, pred),
    }
