"""Evaluation metrics of anomaly detection and subtyping (docs/method.md §6), and of cell-type
classification with an out-of-distribution score (docs/method.md §8.1).

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
    "ece",
    "f1",
    "f1_at_ratio",
    "knn_jaccard_distance",
    "nmi",
    "ood_auroc",
    "open_world_accuracy",
    "panel_auroc",
    "panel_redundancy",
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
    is_anomaly: ArrayLike, predicted: ArrayLike, true_type: ArrayLike, subtype: ArrayLike
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


# ---------------------------------------------------------------- gene panels (docs/method.md §8.3)
def _as_matrix(x: ArrayLike) -> np.ndarray:
    import scipy.sparse as sp

    array = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"x must be a non-empty (cells, genes) matrix, got shape {array.shape}")
    return np.asarray(array, dtype=np.float64)


def _as_panel(genes: ArrayLike, n_genes: int) -> np.ndarray:
    panel = np.asarray(genes, dtype=np.int64).ravel()
    if panel.size == 0 or panel.min() < 0 or panel.max() >= n_genes:
        raise ValueError(
            f"a panel must hold gene indices in 0..{n_genes - 1}, got {panel.tolist()[:5]}"
        )
    return panel


def knn_jaccard_distance(x: ArrayLike, labels: ArrayLike, panels: dict, *, k: int = 15) -> float:
    """Mean over cells of ``1 - |S_all & S_panel| / |S_all | S_panel|`` (ACE's kNN-Jaccard).

    ``S_all`` are a cell's ``k`` Euclidean nearest neighbours (itself excluded) on all genes
    of ``x (cells, genes)``, ``S_panel`` those on the genes ``panels[label]`` of the cell's
    group. Lower is better. Every label must have a panel.
    """
    from sklearn.neighbors import NearestNeighbors

    matrix = _as_matrix(x)
    groups = _as_1d("labels", labels, object)
    _check_lengths(x=matrix, labels=groups)
    missing = sorted(set(map(str, groups)) - set(map(str, panels)))
    if missing:
        raise ValueError(f"panels has no gene panel for the groups {missing}")
    if not 1 <= k < len(matrix):
        raise ValueError(f"k must be in 1..{len(matrix) - 1} (cells - 1), got {k}")
    by_name = {str(name): genes for name, genes in panels.items()}

    def neighbours(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
        index = NearestNeighbors(n_neighbors=k + 1).fit(features)
        found = index.kneighbors(features[rows], return_distance=False)
        return np.array(
            [[j for j in row if j != i][:k] for i, row in zip(rows, found, strict=True)]
        )

    every = neighbours(matrix, np.arange(len(matrix)))
    distance = np.empty(len(matrix))
    for name in np.unique(groups.astype(str)):
        rows = np.flatnonzero(groups.astype(str) == name)
        panel = _as_panel(by_name[name], matrix.shape[1])
        sub = neighbours(matrix[:, panel], rows)
        for i, row in zip(rows, sub, strict=True):
            common = len(np.intersect1d(every[i], row))
            distance[i] = 1.0 - common / (2 * k - common)
    return float(distance.mean())


def panel_auroc(
    x: ArrayLike,
    labels: ArrayLike,
    group: object,
    genes: ArrayLike,
    *,
    folds: int = 3,
    seed: int = 0,
) -> float:
    """One-vs-rest RBF-SVM AUROC of ``group`` on the genes ``genes`` (ACE's protocol).

    Z-scored features, ``gamma="scale"``, ``C`` chosen from ``5^-5 .. 5^5`` by an inner
    ``folds``-fold stratified search; the mean AUROC of an outer ``folds``-fold stratified
    cross-validation (shuffled with ``seed``).
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    matrix = _as_matrix(x)
    names = _as_1d("labels", labels, object).astype(str)
    _check_lengths(x=matrix, labels=names)
    truth = names == str(group)
    if truth.sum() < folds or (~truth).sum() < folds:
        raise ValueError(f"group {group!r} needs at least {folds} cells in and out of it")
    features = matrix[:, _as_panel(genes, matrix.shape[1])]
    search = GridSearchCV(
        make_pipeline(StandardScaler(), SVC(kernel="rbf", gamma="scale")),
        {"svc__C": [5.0**e for e in range(-5, 6)]},
        scoring="roc_auc",
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
    )
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed + 1)
    return float(cross_val_score(search, features, truth, scoring="roc_auc", cv=outer).mean())


def panel_redundancy(x: ArrayLike, genes: ArrayLike) -> float:
    """Mean pairwise ``|Pearson r|`` of the genes ``genes`` of ``x`` (a constant gene counts 0)."""
    matrix = _as_matrix(x)
    panel = _as_panel(genes, matrix.shape[1])
    if len(panel) < 2:
        raise ValueError(f"redundancy needs a panel of at least 2 genes, got {len(panel)}")
    values = matrix[:, panel]
    centred = values - values.mean(0)
    norm = np.sqrt((centred**2).sum(0))
    scaled = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
    r = np.abs(scaled.T @ scaled)
    upper = np.triu_indices(len(panel), 1)
    return float(r[upper].mean())


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
    (0 falls in the first); weighting by count over N is the docs/method.md §8.1 erratum of the seed's
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
    """Open-world annotation accuracy (scDET, docs/method.md §8.2) on target cells.

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
