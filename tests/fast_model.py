"""An ACsleuth with a few epochs of everything, for tests that run the whole pipeline."""

from __future__ import annotations

import acsleuth

FAST = {"prepare_epochs": 2, "train_epochs": 1, "score_epochs": 2, "warm_epochs": 2,
        "style_epochs": 1, "subtype_epochs": 2, "batch_size": 32, "n_memory": 50,
        "verbose": False, "device": "cpu"}


class FastACsleuth(acsleuth.ACsleuth):
    """``acsleuth.ACsleuth`` with :data:`FAST` defaults (patch it in to speed up the command)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**FAST, **kwargs})
