"""The seen types of the open-world annotator's cells (a deliberate deviation, docs/method.md
§8.2): scDET decides which target cells are of a known type and clusters the others; with
``seen_labels="linear"`` (the default) a multinomial logistic regression on the reference's
standardised expression renames each cell scDET calls seen where it is confident (the
prototype head's argmax with ``"scdet"``, the seed's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data import MinibatchLoader
from ..data.source import ExpressionSource
from .annotate import Predictions

SCALE_FLOOR = 1e-3  # a gene's standard deviation is floored here before standardising


@dataclass
class SeenLabeller:
    """``softmax(((x - mean) / scale) @ weight.T + bias)`` over the reference's types."""

    mean: Tensor  # (G,)
    scale: Tensor  # (G,)
    weight: Tensor  # (C, G)
    bias: Tensor  # (C,)

    @torch.no_grad()
    def proba(self, loader: MinibatchLoader) -> np.ndarray:
        """``(cells, C)`` probabilities of every cell of ``loader``, streamed in order."""
        out = np.empty((loader.rows.size, self.weight.shape[0]), dtype=np.float32)
        start = 0
        for _, x in loader:
            z = (x.float() - self.mean) / self.scale
            out[start : start + x.shape[0]] = torch.softmax(z @ self.weight.T + self.bias, 1).cpu()
            start += x.shape[0]
        return out

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> SeenLabeller:
        return cls(state["mean"], state["scale"], state["weight"], state["bias"])


def fit_seen_labeller(
    source: ExpressionSource,
    codes: np.ndarray,
    n_seen: int,
    *,
    max_cells: int,
    seed: int,
    device: torch.device,
) -> SeenLabeller:
    """An L2-penalised (C = 1) multinomial logistic regression of ``codes`` (0 ..
    ``n_seen`` - 1) on the reference ``source``'s expression, standardised per gene; a seeded
    sample of at most ``max_cells`` cells (one of every type kept) is fitted."""
    from sklearn.linear_model import LogisticRegression

    rows = np.arange(codes.size)
    if rows.size > max_cells:
        rng = np.random.default_rng(seed)
        firsts = np.unique(codes, return_index=True)[1]  # one cell of every type
        rest = rng.choice(np.setdiff1d(rows, firsts), max_cells - firsts.size, replace=False)
        rows = np.sort(np.concatenate([firsts, rest]))
    x = np.asarray(source.rows(rows), dtype=np.float64)
    mean, scale = x.mean(0), x.std(0) + SCALE_FLOOR
    fitted = LogisticRegression(max_iter=2000).fit((x - mean) / scale, codes[rows])
    weight = np.zeros((n_seen, x.shape[1]))
    bias = np.zeros(n_seen)
    if fitted.classes_.size == 2:  # sklearn keeps one row: p(second) = sigmoid(w x + b)
        weight[fitted.classes_[1]], bias[fitted.classes_[1]] = fitted.coef_[0], fitted.intercept_[0]
    else:
        weight[fitted.classes_], bias[fitted.classes_] = fitted.coef_, fitted.intercept_

    def tensor(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    return SeenLabeller(tensor(mean), tensor(scale), tensor(weight), tensor(bias))


def relabel_seen(
    pred: Predictions, seen_proba: np.ndarray, min_confidence: float = 0.0
) -> Predictions:
    """``pred`` with the cells it calls seen (argmax among the first ``n_seen`` columns) and
    ``seen_proba (cells, n_seen)`` gives more than ``min_confidence`` named by it: their
    label is its argmax and their seen columns are scDET's seen mass times it; the other
    cells keep scDET's label and probabilities."""
    n_seen = seen_proba.shape[1]
    seen = (pred.label < n_seen) & (seen_proba.max(1) > min_confidence)
    proba = pred.proba.copy()
    mass = proba[seen, :n_seen].sum(1, keepdims=True)
    proba[seen, :n_seen] = mass * seen_proba[seen]
    label = pred.label.copy()
    label[seen] = seen_proba[seen].argmax(1)
    return Predictions(pred.features, proba, label)
