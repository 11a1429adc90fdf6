"""``SubtypeModel``: DESC subtyping of anomalies (module IV) behind the reference's API."""

from __future__ import annotations

import numpy as np
import torch
from anndata import AnnData

from ..._device import resolve_device
from ...data import prepare
from ...nn import Generator
from ...stages.subtype import SubtypeConfig, SubtypeResult, subtype_anomalies
from ._engine import check_genes, n_inputs, on_device
from .configs import SubtypeConfigs


class SubtypeModel:
    """Cluster anomalous cells into ``num_types`` subtypes with DESC on fused embeddings.

    ``generator`` is the trained :attr:`AnomalyModel.G`; the settings are read from
    ``configs`` when the model is built. Unlike the reference library:

    - The expression token ``E(x)`` and the residual token ``E(x - x_hat)`` are fused by a
      transformer over both tokens (the reference attends from one token to one token, where
      the softmax is identically 1, docs/method.md §4).
    - The target distribution P is refreshed once per epoch over all cells, so a cluster
      empty in a minibatch is no error (the reference computes P per minibatch and fails),
      and training stops early when fewer than 0.1 % of the hard assignments change.

    Attributes (after :meth:`fit`)
    ----------------------------------
    labels_
        ``(N,)`` int64 hard assignments (subtype 0 is the largest).
    result_
        The full :class:`acsleuth.stages.subtype.SubtypeResult` (embedding, centroids, history).
    """

    def __init__(self, configs: SubtypeConfigs, generator: Generator, num_types: int) -> None:
        cluster = configs.Cluster
        self.num_types = int(num_types)
        self.device = resolve_device(str(configs.device))
        self.generator = on_device(generator, self.device)
        self.seed = int(configs.random_state)
        self.config = SubtypeConfig(
            embedding="fusion",
            epochs=int(configs.n_epochs),
            batch_size=int(configs.batch_size),
            lr=float(configs.learning_rate),
            weight_decay=float(configs.weight_decay),
            dof=float(cluster["alpha"]),
            n_init=int(cluster["KMeans_n_init"]),
            n_layers=int(cluster["num_layers"]),
            n_heads=int(cluster["nheads"]),
            feedforward=int(cluster["hidden_dim"]),
            dropout=float(cluster["dropout"]),
        )
        self.labels_: np.ndarray | None = None
        self.result_: SubtypeResult | None = None

    def fit(self, adata: AnnData) -> torch.Tensor:
        """``(N, num_types)`` soft assignments ``q`` of the cells of ``adata`` (its rows sum to 1).

        ``adata`` holds the anomalies' (corrected) expression on the generator's genes.
        """
        check_genes(adata, n_inputs(self.generator), "SubtypeModel.fit: adata")
        source = prepare(adata, name="anomalies")
        x = torch.from_numpy(source.rows(np.arange(source.n_obs)))
        self.result_ = subtype_anomalies(
            x,
            generator=self.generator,
            n_subtypes=self.num_types,
            config=self.config,
            device=self.device,
            seed=self.seed,
        )
        self.labels_ = self.result_.labels
        return torch.from_numpy(self.result_.soft_assignment(self.config.dof))


__all__ = ["SubtypeModel"]
