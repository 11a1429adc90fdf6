"""The classifier's out-of-distribution score (docs/method.md §8.1, "as implemented").

``"energy"`` is CLAMS' ``-LSE(x)``. ``"energy+knn"`` (a deliberate deviation from the seed)
adds the cell's mean distance to its ``k`` nearest training cells in the principal components
of the standardised training cells; ``"energy+softmax+knn"`` also adds the negative maximum
softmax probability at the fitted temperature; ``"energy+softmax+knn+type"`` (the default)
also adds the *type distance*: the cell's mean distance to the ``type_k`` nearest training
cells of its predicted type, in units of that type's own spread (the mean and standard
deviation of its training cells' leave-one-out distances to each other), so a cell far from
a compact type counts as far even where a diffuse type lies at the same distance. Every term
is standardised with the validation cells' mean and standard deviation, weighted
(:data:`TERM_WEIGHTS`; the distance's weight can be set as ``knn_weight``) and summed. On
pbmc68k_reduced the energy ranks held-out types far from every known one (monocytes, NK
cells) as *more* in-distribution than the reference itself (a ReLU-like network's logits
grow along a known type's direction), while a distance ranks them first; the energy and,
more, the softmax still help on held-out types close to a known one (T-cell subsets;
benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .neighbours import knn_distance, nearest, principal_axes

OODScore = Literal["energy", "energy+knn", "energy+softmax+knn", "energy+softmax+knn+type"]
OOD_SCORES: tuple[OODScore, ...] = (
    "energy",
    "energy+knn",
    "energy+softmax+knn",
    "energy+softmax+knn+type",
)
Weights = tuple[float, float, float, float]
# weights of the standardised (energy, -max softmax, distance, type distance) terms of each
# index-based score, chosen on the development splits of benchmarks/eval_classify.py
# (RESULTS.md, issue 18)
TERM_WEIGHTS: dict[str, Weights] = {
    "energy+knn": (1.0, 0.0, 2.0, 0.0),
    "energy+softmax+knn": (1.0, 1.0, 8.0, 0.0),
    "energy+softmax+knn+type": (1.0, 1.0, 8.0, 4.0),
}
N_TERMS = 4
MIN_TYPE_CELLS = 3  # a type's own spread needs this many indexed cells; fewer: all types'


def term_weights(score: OODScore, knn_weight: float | None) -> Weights:
    """The score's term weights, its distance weight replaced by ``knn_weight`` when given."""
    energy, softmax, distance, type_ = TERM_WEIGHTS[score]
    return energy, softmax, distance if knn_weight is None else float(knn_weight), type_


@dataclass
class OODIndex:
    """The training cells in principal components, and the validation statistics that put
    the energy, the softmax, the distance and the type distance on one scale.

    Attributes
    ----------
    mean, components
        ``(G,)`` centre and ``(G, d)`` principal axes of the standardised training cells.
    keys
        ``(N, d)`` the indexed training cells' coordinates.
    k
        Neighbours averaged.
    moments
        ``(8,)`` validation mean and standard deviation of the energy, of the negative max
        softmax, of the distance, then of the type distance.
    weights
        ``(4,)`` weights of the standardised energy, negative max softmax, distance and type
        distance.
    codes
        ``(N,)`` the indexed cells' types (None in indexes saved before the type distance).
    type_k
        Neighbours of the cell's predicted type averaged for the type distance.
    type_moments
        ``(K, 2)`` mean and standard deviation of each type's leave-one-out distances.
    """

    mean: Tensor
    components: Tensor
    keys: Tensor
    k: int
    moments: Tensor
    weights: Weights
    codes: Tensor | None = None
    type_k: int = 0
    type_moments: Tensor | None = None

    def project(self, z: Tensor) -> Tensor:
        """Standardised rows ``z`` in the index's principal components."""
        return (z.float() - self.mean) @ self.components

    def distances(self, z: Tensor) -> Tensor:
        """``(n,)`` mean distance of standardised rows ``z`` to their ``k`` nearest keys."""
        return knn_distance(self.project(z), self.keys, self.k)

    def type_distances(self, z: Tensor, types: Tensor) -> Tensor:
        """``(n,)`` each row's mean distance to the ``type_k`` nearest keys of its type
        ``types``, less that type's mean leave-one-out distance, over its standard deviation
        (0 for a type with no indexed cell: no evidence either way)."""
        if self.codes is None:
            raise ValueError("this OOD index was saved before the type distance; refit it")
        y, out = self.project(z), torch.zeros(z.shape[0], device=z.device)
        for code in torch.unique(types).tolist():
            keys = self.keys[self.codes == code]
            if keys.shape[0] == 0:
                continue
            rows = types == code
            found = knn_distance(y[rows], keys, type_neighbours(self.type_k, keys.shape[0]))
            mean, std = self.type_moments[code].float()
            out[rows] = (found - mean) / std
        return out

    def score(
        self,
        energy: np.ndarray,
        confidence: np.ndarray,
        distance: np.ndarray,
        type_distance: np.ndarray | None = None,
    ) -> np.ndarray:
        """``sum_t weight_t * z(term_t)`` over (energy, -confidence, distance, type
        distance), each term standardised with the validation cells' mean and standard
        deviation; ``type_distance`` is needed only when its weight is not 0."""
        m = self.moments.double().cpu().numpy()
        terms = (energy, -confidence, distance, type_distance)
        return sum(
            w * (t - m[2 * i]) / m[2 * i + 1]
            for i, (w, t) in enumerate(zip(self.weights, terms, strict=True))
            if w
        )

    def state_dict(self) -> dict[str, Tensor]:
        names = ("mean", "components", "keys", "moments", "codes", "type_moments")
        return {
            **{n: getattr(self, n) for n in names if getattr(self, n) is not None},
            "k": torch.tensor(self.k),
            "type_k": torch.tensor(self.type_k),
            "weights": torch.tensor(self.weights, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> OODIndex:
        """An index from :meth:`state_dict`, or from one saved before the type distance (three
        terms) or before the softmax term (the two-term ``"energy+knn"``: its ``weight`` and 4
        moments); the terms it lacks get weight 0."""
        moments, weights = state["moments"], state.get("weights")
        if weights is None:
            moments = torch.cat([moments[:2], moments.new_tensor([0.0, 1.0]), moments[2:]])
            weights = torch.tensor([1.0, 0.0, float(state["weight"])])
        missing = N_TERMS - len(weights)
        moments = torch.cat([moments, moments.new_tensor([0.0, 1.0] * missing)])
        weights = torch.cat([weights.double(), torch.zeros(missing, dtype=torch.float64)])
        return cls(
            state["mean"],
            state["components"],
            state["keys"],
            int(state["k"]),
            moments,
            tuple(float(w) for w in weights),
            state.get("codes"),
            int(state.get("type_k", 0)),
            state.get("type_moments"),
        )


def type_neighbours(type_k: int, n_cells: int) -> int:
    """Neighbours of a type of ``n_cells`` indexed cells averaged, for its leave-one-out
    spread and for queries alike: ``type_k``, at most the other ``n_cells - 1`` (at least 1)."""
    return max(1, min(type_k, n_cells - 1))


def type_spreads(keys: Tensor, codes: Tensor, n_types: int, type_k: int) -> Tensor:
    """``(n_types, 2)`` mean and standard deviation of each type's leave-one-out distances:
    each indexed cell's mean distance to its ``type_k`` nearest other cells of its type. A
    type with fewer than :data:`MIN_TYPE_CELLS` indexed cells (or none) takes all cells'
    moments; standard deviations are floored at 1e-6."""
    loo = torch.full((keys.shape[0],), float("nan"), device=keys.device)
    for code in torch.unique(codes).tolist():
        rows = codes == code
        n = int(rows.sum())
        if n >= 2:
            k = type_neighbours(type_k, n)
            found = nearest(keys[rows], keys[rows], k + 1)[0]
            loo[rows] = found[:, 1:].mean(1)  # the first is the cell itself
    known = loo[~loo.isnan()]
    pooled = torch.stack([known.mean(), known.std(correction=0)]) if known.numel() > 1 else None
    moments = torch.empty((n_types, 2), dtype=torch.float64)
    for code in range(n_types):
        own = loo[(codes == code) & ~loo.isnan()]
        if own.numel() >= MIN_TYPE_CELLS:
            moments[code] = torch.stack([own.mean(), own.std(correction=0)]).double()
        elif pooled is not None:
            moments[code] = pooled.double()
        else:
            moments[code] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    moments[:, 1] = moments[:, 1].clamp_min(1e-6)
    return moments


def fit_ood_index(
    z_train: Tensor,
    *,
    n_components: int,
    k: int,
    weights: Weights,
    codes: Tensor | None = None,
    n_types: int = 0,
    type_k: int = 0,
) -> OODIndex:
    """The index of standardised training rows ``z_train (N, G)``: PCA to
    ``min(n_components, N - 1, G)`` axes (exact SVD) and, with their type ``codes`` (of
    ``n_types`` types), each type's spread for the type distance; the validation moments are
    set by :func:`calibrate`."""
    if z_train.shape[0] <= k:
        raise ValueError(
            f"reference: {z_train.shape[0]} training cells are too few for knn_k={k} "
            "neighbours; lower knn_k, give more cells, or use ood_score='energy'"
        )
    mean, components = principal_axes(
        z_train, min(n_components, z_train.shape[0] - 1, z_train.shape[1])
    )
    keys = (z_train.float() - mean) @ components
    moments = torch.tensor([0.0, 1.0] * N_TERMS, dtype=torch.float64)
    spreads = None if codes is None else type_spreads(keys, codes, n_types, type_k)
    return OODIndex(mean, components, keys, k, moments, weights, codes, type_k, spreads)


def calibrate(
    index: OODIndex,
    energy: np.ndarray,
    confidence: np.ndarray,
    distance: np.ndarray,
    type_distance: np.ndarray | None = None,
) -> None:
    """Set the index's moments from the validation cells' ``energy``, max softmax
    ``confidence``, ``distance`` and ``type_distance`` (without it: 0 and 1; a zero spread is
    floored at 1e-6)."""
    terms = (energy, -confidence, distance)
    values = [v for t in terms for v in (t.mean(), t.std())]
    values += [0.0, 1.0] if type_distance is None else [type_distance.mean(), type_distance.std()]
    moments = torch.tensor(values, dtype=torch.float64)
    moments[1::2] = moments[1::2].clamp_min(1e-6)
    index.moments = moments
