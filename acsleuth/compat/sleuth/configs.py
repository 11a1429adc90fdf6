"""The reference library's configuration objects, with its defaults (docs/method.md §7).

They are plain mutable objects: scripts assign to their attributes
(``configs.train_epochs = 10``) and to the entries of their dicts
(``configs.loss_weight['w_rec'] = 50``). A model reads its configuration when it is built.
"""

from __future__ import annotations

import copy
from typing import Any

from ._utils import select_device


class _Configs:
    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the settings as a dict (the device as a string)."""
        out = copy.deepcopy(vars(self))
        out["device"] = str(out["device"])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class AnomalyConfigs(_Configs):
    """Settings of :class:`~acsleuth.compat.sleuth.AnomalyModel` for ``gene_dim`` genes."""

    def __init__(self, gene_dim: int) -> None:
        self.gene_dim = gene_dim
        self.prepare_epochs = 50
        self.train_epochs = 20
        self.score_epochs = 20
        self.batch_size = 128
        self.learning_rate = 1e-4
        self.n_critic = 2
        self.loss_weight = {"w_rec": 30, "w_adv": 1, "w_gp": 10}
        self.device = select_device("cuda")
        self.random_state = 2024
        self.Discriminator = {"in_dim": gene_dim, "hidden_dim": [256, 16], "num_blocks": 1}
        self.Generator = {
            "in_dim": gene_dim,
            "hidden_dim": [512, 256],
            "num_blocks": 2,
            "mem_dim": 512,
            "threshold": 0.01,
            "temperature": 0.05,
        }
        self.Scorer = {"in_dim": gene_dim, "hidden_dim": [512, 256]}


class AdaptConfigs(_Configs):
    """Settings of :class:`~acsleuth.compat.sleuth.AdaptModel` for ``gene_dim`` genes."""

    def __init__(self, gene_dim: int) -> None:
        self.gene_dim = gene_dim
        self.n_epochs = 50
        self.batch_size = 128
        self.learning_rate = 1e-4
        self.n_critic = 3
        self.loss_weight = {"w_rec": 30, "w_adv": 1, "w_gp": 10}
        self.device = select_device("cuda")
        self.random_state = 2024
        self.Discriminator = {"in_dim": gene_dim, "hidden_dim": [256, 16], "num_blocks": 1}
        self.Generator = {"in_dim": gene_dim, "hidden_dim": [512, 256], "num_blocks": 2}


class SubtypeConfigs(_Configs):
    """Settings of :class:`~acsleuth.compat.sleuth.SubtypeModel` for ``gene_dim`` genes."""

    def __init__(self, gene_dim: int) -> None:
        self.gene_dim = gene_dim
        self.n_epochs = 100
        self.batch_size = 64
        self.learning_rate = 1e-4
        self.weight_decay = 1e-4
        self.device = select_device("cuda")
        self.random_state = 2024
        self.Cluster = {
            "alpha": 1,
            "KMeans_n_init": 20,
            "num_layers": 3,
            "nheads": 4,
            "hidden_dim": 512,
            "dropout": 0.1,
        }


__all__ = ["AdaptConfigs", "AnomalyConfigs", "SubtypeConfigs"]
