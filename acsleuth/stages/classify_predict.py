"""CLAMS' prediction: the logits of cells streamed through the kept network (and the
ensemble's members), the calibrated probabilities, the energy and the configured OOD score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..data import ExpressionSource, MinibatchLoader
from ..nn.ebm import EnergyClassifier, ood_score
from .classify_ood import OODIndex


class Predicted(NamedTuple):
    """Logits of cells: the kept network's, their distances to the training cells and to
    those of their predicted type (with an index; the latter if it holds the types), and the
    mean logits of the kept network and the ensemble's members (the kept network's own logits
    without members)."""

    logits: np.ndarray
    distance: np.ndarray | None
    voted: np.ndarray
    type_distance: np.ndarray | None = None


def predict_logits(
    network: EnergyClassifier,
    source: ExpressionSource,
    *,
    batch_size: int,
    device: torch.device,
    rows: np.ndarray | None = None,
    index: OODIndex | None = None,
    members: Sequence[EnergyClassifier] = (),
) -> Predicted:
    """``(n, K)`` float32 logits of ``network`` and, with an ``index``, ``(n,)`` distances to
    the training cells (and type distances, the type being ``network``'s prediction), and the
    mean logits of ``network`` and ``members``; streamed batch by batch in one pass over
    ``source`` (memory O(batch) besides the outputs)."""
    loader = MinibatchLoader(
        source, batch_size=batch_size, device=device, resident_bytes=0, rows=rows
    )
    out = np.empty((loader.rows.size, network.body[-1].out_features), dtype=np.float32)
    voted = np.empty_like(out) if members else out
    distance = None if index is None else np.empty(loader.rows.size, dtype=np.float32)
    typed = index is not None and index.codes is not None
    type_distance = np.empty(loader.rows.size, dtype=np.float32) if typed else None
    start = 0
    for net in (network, *members):
        net.eval()
    with torch.inference_mode():
        for _, x in loader:
            rows_now = slice(start, start + x.shape[0])
            z = network.standardise(x)
            kept = network.logits(z).float()
            out[rows_now] = kept.cpu().numpy()
            if members:
                total = kept + sum(m(x).float() for m in members)
                voted[rows_now] = (total / (1 + len(members))).cpu().numpy()
            if distance is not None:
                distance[rows_now] = index.distances(z).cpu().numpy()
            if type_distance is not None:
                types = kept.argmax(1)
                type_distance[rows_now] = index.type_distances(z, types).cpu().numpy()
            start += x.shape[0]
    return Predicted(out, distance, voted, type_distance)


def summarise(
    logits: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(proba, confidence, energy)``: ``softmax(f / temperature)``, its max, and ``-LSE(f)``
    (higher = more OOD; the temperature only calibrates p(y|x))."""
    t = torch.from_numpy(logits)
    proba = torch.softmax(t / temperature, dim=1)
    return proba.numpy(), proba.max(1).values.numpy(), ood_score(t).numpy()


def combined_score(
    energy: np.ndarray, confidence: np.ndarray, predicted: Predicted, index: OODIndex | None
) -> np.ndarray:
    """The configured OOD score: the energy alone (no ``index``) or the index's weighted sum
    of the standardised energy, negative max softmax ``confidence``, distance and type
    distance of ``predicted``."""
    if index is None:
        return energy
    return index.score(energy, confidence, predicted.distance, predicted.type_distance)


__all__ = ["Predicted", "combined_score", "predict_logits", "summarise"]
