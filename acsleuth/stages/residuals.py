"""Scaled residuals of every target cell, stored once and streamed to the MMD predictor."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ..data.store import RowStore

MEDIAN_SAMPLE = 20_000
"""Cells per batch whose residuals give its per-gene median (all cells of smaller batches)."""


class ScaledResiduals:
    """``(N, G)`` scaled residuals ``(x - x_hat) / s`` in a :class:`RowStore`, minus an optional
    per-batch centre ``center[codes[i]]`` applied as rows are read (never stored twice).

    Parameters
    ----------
    store
        The uncentred residuals.
    center
        ``(n_batches, G)`` float32 centres on the store's device, or None.
    codes
        ``(N,)`` int64 batch of every row on the store's device (needed with ``center``).
    """

    def __init__(
        self, store: RowStore, center: Tensor | None = None, codes: Tensor | None = None
    ) -> None:
        if (center is None) != (codes is None):
            raise ValueError("ScaledResiduals: give both center and codes, or neither")
        self.store = store
        self.center = center
        self.codes = codes

    @classmethod
    def wrap(cls, residuals: Tensor) -> ScaledResiduals:
        """An in-memory ``(N, G)`` tensor seen as uncentred residuals (no copy)."""
        return cls(RowStore.of(residuals))

    @property
    def shape(self) -> tuple[int, int]:
        return self.store.shape

    @property
    def device(self) -> torch.device:
        return self.store.device

    def block(self, start: int, stop: int) -> Tensor:
        """Stored (uncentred) rows ``start .. stop``."""
        return self.store.read(start, stop)

    def finish(self, raw: Tensor, rows: Tensor) -> Tensor:
        """float32 centred residuals of stored rows ``raw`` at global positions ``rows``."""
        out = raw.float()
        if self.center is not None:
            out = out - self.center[self.codes[rows]]
        return out

    def chunks(self, size: int) -> Iterator[tuple[int, Tensor]]:
        """``(start, float32 centred rows)`` over consecutive chunks of at most ``size`` rows."""
        for start, raw in self.store.runs(size):
            rows = torch.arange(start, start + raw.shape[0], device=self.device)
            yield start, self.finish(raw, rows)

    def norms(self, size: int = 8192) -> Tensor:
        """``(N,)`` float32 row norms (the ``"scaled"`` score), on the store's device."""
        out = torch.empty(self.shape[0], device=self.device)
        for start, rows in self.chunks(size):
            out[start : start + rows.shape[0]] = rows.norm(dim=1)
        return out


def median_sample(codes: np.ndarray, *, cap: int = MEDIAN_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted row positions whose residuals estimate each batch's median: every cell of a batch
    of at most ``cap`` cells, else ``cap`` of them drawn without replacement."""
    rng = np.random.default_rng(seed)
    chosen = []
    for batch in np.unique(codes):
        rows = np.flatnonzero(codes == batch)
        chosen.append(rows if rows.size <= cap else rng.choice(rows, cap, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


@torch.inference_mode()
def batch_medians(residuals: Tensor, codes: Tensor, n_batches: int) -> Tensor:
    """``(n_batches, G)`` float32 per-gene median residual of each batch (0 for a batch with no row).

    A target batch measured unlike the reference shifts the residuals of all its cells the
    same way, normal ones included; the median over a batch (whose cells are mostly normal)
    estimates that shift, and subtracting it leaves what sets a cell apart from its batch.
    """
    medians = torch.zeros(
        (n_batches, residuals.shape[1]), dtype=torch.float32, device=residuals.device
    )
    for batch in torch.unique(codes).tolist():
        medians[batch] = residuals[codes == batch].float().median(dim=0).values
    return medians
