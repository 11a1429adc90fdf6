"""A drop-in replacement for the reference ACsleuth library, ``sleuth`` (docs/method.md §7).

Scripts written for it run on acsleuth's engine and ops after changing their imports only::

    from acsleuth.compat.sleuth import load_pkl, AnomalyModel        # was: from sleuth import ...
    from acsleuth.compat.sleuth.configs import AnomalyConfigs        # was: from sleuth.configs import ...
    from acsleuth.compat.sleuth._utils import update_configs_with_args, evaluate

Names, signatures and defaults are the reference's. Where the reference behaves wrongly,
this module follows acsleuth's correct behaviour, and each class's docstring says where.
"""

from __future__ import annotations

from ._utils import evaluate, update_configs_with_args
from .adapt import AdaptModel
from .anomaly import AnomalyModel
from .configs import AdaptConfigs, AnomalyConfigs, SubtypeConfigs
from .read import load_pkl, read, save_pkl
from .subtype import SubtypeModel

__all__ = [
    "AdaptConfigs",
    "AdaptModel",
    "AnomalyConfigs",
    "AnomalyModel",
    "SubtypeConfigs",
    "SubtypeModel",
    "evaluate",
    "load_pkl",
    "read",
    "save_pkl",
    "update_configs_with_args",
]
