"""The classifier's out-of-distribution score (docs/method.md §8.1, "as implemented").

``"energy"`` is CLAMS' ``-LSE(x)``. ``"energy+knn"`` (the default, a deliberate deviation
from the seed) adds the cell's mean distance to its ``k`` nearest training cells in the
principal components of the standardised training cells: both terms are standardised with
the validation cells' mean and standard deviation and summed, the distance with weight
``knn_weight``. On pbmc68k_reduced the energy ranks held-out types far from every known one
(monocytes, NK cells) as *more* in-distribution than the reference itself (a ReLU-like
network's logits grow along a known type's direction), while a distance ranks them first;
the energy still helps on held-out types close to a known one (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .neighbours import knn_distance, principal_axes

OODScore = Literal["energy", "energy+knn"]
OOD_SCORES: tuple[OODScore, ...] = ("energy", "energy+knn")


@dataclass
class OODIndex:
    """The training cells in principal components, and the validation statistics that put
    the energy and the distance on one scale.

    Attributes
    ----------
    mean, components
        ``(G,)`` centre and ``(G, d)`` principal axes of the standardised training cells.
    keys
        ``(N, d)`` the indexed training cells' coordinates.
    k
        Neighbours averaged.
    moments
        ``(4,)`` validation mean and standard deviation of the energy, then of the distance.
    weight
        Weight of the standardised distance.
    """

    mean: Tensor
    components: Tensor
    keys: Tensor
    k: int
    moments: Tensor
    weight: float

    def distances(self, z: Tensor) -> Tensor:
        """``(n,)`` mean distance of standardised rows ``z`` to their ``k`` nearest keys."""
        return knn_distance((z.float() - self.mean) @ self.components, self.keys, self.k)

    def score(self, energy: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """``z(energy) + weight * z(distance)``, each standardised with the validation cells'."""
        m = self.moments.double().cpu().numpy()
        return (energy - m[0]) / m[1] + self.weight * (distance - m[2]) / m[3]

    def state_dict(self) -> dict[str, Tensor]:
        names = ("mean", "components", "keys", "moments")
        return {
            **{n: getattr(self, n) for n in names},
            "k": torch.tensor(self.k),
            "weight": torch.tensor(self.weight, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> OODIndex:
        return cls(
            state["mean"],
            state["components"],
            state["keys"],
            int(state["k"]),
            state["moments"],
            float(state["weight"]),
        )


def fit_ood_index(z_train: Tensor, *, n_components: int, k: int, weight: float) -> OODIndex:
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
    return OODIndex(mean, components, keys, k, torch.tensor([0.0, 1.0, 0.0, 1.0]), weight)


def calibrate(index: OODIndex, energy: np.ndarray, distance: np.ndarray) -> None:
    """Set the index's moments from the validation cells' ``energy`` and ``distance``
    (a zero spread is floored at 1e-6)."""
    values = [energy.mean(), energy.std(), distance.mean(), distance.std()]
    moments = torch.tensor(values, dtype=torch.float64)
    moments[[1, 3]] = moments[[1, 3]].clamp_min(1e-6)
    index.moments = moments
