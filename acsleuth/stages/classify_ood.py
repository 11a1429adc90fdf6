"""The classifier's out-of-distribution score (docs/method.md §8.1, "as implemented").

``"energy"`` is CLAMS' ``-LSE(x)``. ``"energy+knn"`` (a deliberate deviation from the seed)
adds the cell's mean distance to its ``k`` nearest training cells in the principal components
of the standardised training cells; ``"energy+softmax+knn"`` (the default) also adds the
negative maximum softmax probability at the fitted temperature. Every term is standardised
with the validation cells' mean and standard deviation, weighted (:data:`TERM_WEIGHTS`; the
distance's weight can be set as ``knn_weight``) and summed. On pbmc68k_reduced the energy
ranks held-out types far from every known one (monocytes, NK cells) as *more*
in-distribution than the reference itself (a ReLU-like network's logits grow along a known
type's direction), while a distance ranks them first; the energy and, more, the softmax
still help on held-out types close to a known one (T-cell subsets; benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .neighbours import knn_distance, principal_axes

OODScore = Literal["energy", "energy+knn", "energy+softmax+knn"]
OOD_SCORES: tuple[OODScore, ...] = ("energy", "energy+knn", "energy+softmax+knn")
# weights of the standardised (energy, -max softmax, distance) terms of each index-based score,
# chosen on the development splits of benchmarks/eval_classify.py (RESULTS.md, issue 18)
TERM_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "energy+knn": (1.0, 0.0, 2.0),
    "energy+softmax+knn": (1.0, 1.0, 8.0),
}


def term_weights(score: OODScore, knn_weight: float | None) -> tuple[float, float, float]:
    """The score's term weights, its distance weight replaced by ``knn_weight`` when given."""
    energy, softmax, distance = TERM_WEIGHTS[score]
    return energy, softmax, distance if knn_weight is None else float(knn_weight)


@dataclass
class OODIndex:
    """The training cells in principal components, and the validation statistics that put
    the energy, the softmax and the distance on one scale.

    Attributes
    ----------
    mean, components
        ``(G,)`` centre and ``(G, d)`` principal axes of the standardised training cells.
    keys
        ``(N, d)`` the indexed training cells' coordinates.
    k
        Neighbours averaged.
    moments
        ``(6,)`` validation mean and standard deviation of the energy, of the negative max
        softmax, then of the distance.
    weights
        ``(3,)`` weights of the standardised energy, negative max softmax and distance.
    """

    mean: Tensor
    components: Tensor
    keys: Tensor
    k: int
    moments: Tensor
    weights: tuple[float, float, float]

    def distances(self, z: Tensor) -> Tensor:
        """``(n,)`` mean distance of standardised rows ``z`` to their ``k`` nearest keys."""
        return knn_distance((z.float() - self.mean) @ self.components, self.keys, self.k)

    def score(self, energy: np.ndarray, confidence: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """``sum_t weight_t * z(term_t)`` over (energy, -confidence, distance), each term
        standardised with the validation cells' mean and standard deviation."""
        m = self.moments.double().cpu().numpy()
        terms = (energy, -confidence, distance)
        return sum(
            w * (t - m[2 * i]) / m[2 * i + 1]
            for i, (w, t) in enumerate(zip(self.weights, terms, strict=True))
            if w
        )

    def state_dict(self) -> dict[str, Tensor]:
        names = ("mean", "components", "keys", "moments")
        return {
            **{n: getattr(self, n) for n in names},
            "k": torch.tensor(self.k),
            "weights": torch.tensor(self.weights, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> OODIndex:
        """An index from :meth:`state_dict`, or from the two-term ``"energy+knn"`` index saved
        before the softmax term existed (its ``weight`` and 4 moments)."""
        moments, weights = state["moments"], state.get("weights")
        if weights is None:
            moments = torch.cat([moments[:2], moments.new_tensor([0.0, 1.0]), moments[2:]])
            weights = torch.tensor([1.0, 0.0, float(state["weight"])])
        return cls(
            state["mean"],
            state["components"],
            state["keys"],
            int(state["k"]),
            moments,
            tuple(float(w) for w in weights),
        )


def fit_ood_index(
    z_train: Tensor, *, n_components: int, k: int, weights: tuple[float, float, float]
) -> OODIndex:
    """The index of standardised training rows ``z_train (N, G)``: PCA to
    ``min(n_components, N - 1, G)`` axes (exact SVD); the validation moments are set by
    :func:`calibrate`."""
    if z_train.shape[0] <= k:
        raise ValueError(
            f"reference: {z_train.shape[0]} training cells are too few for knn_k={k} "
            "neighbours; lower knn_k, give more cells, or use ood_score='energy'"
        )
    mean, components = principal_axes(
        z_train, min(n_components, z_train.shape[0] - 1, z_train.shape[1])
    )
    keys = (z_train.float() - mean) @ components
    moments = torch.tensor([0.0, 1.0] * 3, dtype=torch.float64)
    return OODIndex(mean, components, keys, k, moments, weights)


def calibrate(
    index: OODIndex, energy: np.ndarray, confidence: np.ndarray, distance: np.ndarray
) -> None:
    """Set the index's moments from the validation cells' ``energy``, max softmax
    ``confidence`` and ``distance`` (a zero spread is floored at 1e-6)."""
    terms = (energy, -confidence, distance)
    moments = torch.tensor([v for t in terms for v in (t.mean(), t.std())], dtype=torch.float64)
    moments[1::2] = moments[1::2].clamp_min(1e-6)
    index.moments = moments
