"""``AnomalyModel``: module I and the MMD predictor behind the reference library's API."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy.special import expit

from ...model import ACsleuth
from ...nn import Critic, Generator
from ._engine import check_networks, engine_settings
from .configs import AnomalyConfigs


class AnomalyModel:
    """Train on normal reference cells (:meth:`detect`), then score target cells (:meth:`predict`).

    The settings are read from ``configs`` when the model is built. Unlike the reference
    library:

    - The memory bank enqueues the encoder embeddings ``z`` in a ring buffer that works for any
      batch size (the reference asserts that the batch size divides ``mem_dim``; the paper's
      enqueueing of the reconstructions would freeze the queue, docs/method.md §1).
    - Fewer reference cells than ``batch_size`` train on one smaller batch per epoch (the
      reference drops every batch and trains nothing below 128 cells).
    - Target genes are matched to the reference's by name.
    - :meth:`predict` uses acsleuth's MMD predictor (docs/method.md §1.1: the corrected gamma_c weights,
      Gaussian kernel, a warm start from the scaled-residual ranking, reference residuals as
      known normal cells), which scored higher than the reference's (benchmarks/RESULTS.md).
    - ``anomaly_ratio`` does not change the scores: fixing the MMD's group sizes from it
      scored lower (RESULTS.md, issue 3); acsleuth uses it only to call anomalies.

    Attributes
    ----------
    G, D
        The trained generator ``x -> (x_hat, z)`` and critic (``None`` before :meth:`detect`);
        pass ``G`` to :class:`AdaptModel` and :class:`SubtypeModel`.
    engine
        The :class:`acsleuth.ACsleuth` model doing the work (save it with ``engine.save``).
    """

    def __init__(self, configs: AnomalyConfigs, anomaly_ratio: float | None = None) -> None:
        memory = configs.Generator
        self.engine = ACsleuth(
            n_top_genes=int(configs.Generator["in_dim"]),
            prepare_epochs=int(configs.prepare_epochs),
            train_epochs=int(configs.train_epochs),
            score_epochs=int(configs.score_epochs),
            n_critic=int(configs.n_critic),
            anomaly_ratio=anomaly_ratio,
            n_memory=int(memory["mem_dim"]),
            memory_shrink=float(memory["threshold"]),
            memory_temperature=float(memory["temperature"]),
            **engine_settings(configs),
        )
        self._configs = configs
        self.G: Generator | None = None
        self.D: Critic | None = None

    def detect(self, ref: AnnData) -> None:
        """Train module I on the reference (normal cells, all of its genes)."""
        if not isinstance(ref, AnnData):
            raise TypeError(f"detect: ref must be an AnnData, got {type(ref).__name__}")
        check_networks(self._configs, ref.n_vars)
        self.engine.fit(ref)
        self.G, self.D = self.engine.generator_, self.engine.critic_
        self.gene_names = ref.var_names

    def predict(self, tgt: AnnData) -> np.ndarray:
        """Anomaly probabilities (float64, one per target cell; higher = more anomalous)."""
        logits = self._scores(tgt, "mmd")
        return expit(logits)

    def G_score(self, tgt: AnnData) -> np.ndarray:
        """``||x - x_hat||_2`` per target cell: the generator's reconstruction error."""
        return self._scores(tgt, "residual")

    def D_score(self, tgt: AnnData) -> np.ndarray:
        """``||C(x) - C(x_hat)||_2`` per target cell: the distance in the critic's output."""
        return self._scores(tgt, "critic")

    def _scores(self, tgt: AnnData, score: str) -> np.ndarray:
        if self.G is None:
            raise RuntimeError("AnomalyModel: call detect(ref) before scoring target cells")
        return self.engine.evaluate(tgt, score=score).scores[score]


__all__ = ["AnomalyModel"]
