"""Helpers of the reference library: devices, seeding, config updates and ``evaluate``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from ... import metrics


def select_device(GPU: bool | str = True) -> torch.device:
    """``GPU`` (``True`` or a device string such as ``"cuda:0"``) when CUDA is available, else CPU."""
    if GPU and torch.cuda.is_available():
        return torch.device(GPU if isinstance(GPU, str) else "cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global RNG is what scripts draw from)
    torch.manual_seed(seed)


def update_configs_with_args(configs: Any, args_dict: Mapping[str, Any]) -> None:
    """Set every attribute ``configs`` already has to its value in ``args_dict``, skipping ``None``
    (the argparse value of an option that was not given)."""
    for key, value in args_dict.items():
        if value is not None and hasattr(configs, key):
            setattr(configs, key, value)


def evaluate(y_true: ArrayLike, y_score: ArrayLike) -> tuple[float, float, float]:
    """``(AUROC, average precision, F1)`` of anomaly scores against 0/1 (or boolean) labels.

    F1 calls anomalous every cell whose score is at least the ``q``-th percentile of the
    scores, ``q = 100 x`` the fraction of normal cells (numpy's linear interpolation), as
    the reference library does.
    """
    truth = np.asarray(y_true)
    score = np.asarray(y_score, dtype=np.float64)
    auroc = metrics.auroc(truth, score)  # validates both: 1-D, same length, finite, two classes
    ap = metrics.average_precision(truth, score)
    truth = truth.astype(bool)
    threshold = np.percentile(score, 100.0 * np.count_nonzero(~truth) / truth.size)
    f1 = float(skm.f1_score(truth, score >= threshold, zero_division=0.0))
    return auroc, ap, f1


__all__ = ["evaluate", "seed_everything", "select_device", "update_configs_with_args"]
