"""Evaluation metrics of anomaly detection and subtyping (docs/method.md §6), and of cell-type
classification with an out-of-distribution score (SPEC §8.1).

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
    "detection_report",
    "ece",
    "f1",
    "f1_at_ratio",
    "nmi",
    "ood_auroc",
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


def ood_auroc(in_scores: ArrayLike, out_scores: ArrayLike) -> float:
    """AUROC of an OOD score (higher = more out of distribution) separating the cells of
    ``out_scores`` (out of distribution) from those of ``in_scores``."""
    inside = _as_scores("in_scores", in_scores)
    outside = _as_scores("out_scores", out_scores)
    truth = np.concatenate([np.zeros(inside.size, bool), np.ones(outside.size, bool)])
    return auroc(truth, np.concatenate([inside, outside]))


def ece(correct: ArrayLike, confidence: ArrayLike, *, n_bins: int = 15) -> float:
    """Expected calibration error: ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``.

    ``correct`` says whether each prediction was right, ``confidence`` is its max p(y|x) in
    [0, 1]. Bins are ``n_bins`` equal-width intervals ``(k/n, (k+1)/n]`` of the confidence
    (0 falls in the first); weighting by count over N is the SPEC §8.1 erratum of the seed's
    eq. 6, which divides by the number of bins.
    """
    right = _as_bool("correct", correct)
    conf = _as_scores("confidence", confidence)
    _check_lengths(correct=right, confidence=conf)
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"confidence must lie in [0, 1], got [{conf.min():.3g}, {conf.max():.3g}]")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=right - conf, minlength=n_bins)  # |B_b| (acc - conf) per bin
    return float(np.abs(gap).sum() / conf.size)
