"""Toy labelled data for the classifier tests: known types, and a far-away unknown one."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

FAST = {
    "widths": (32,),
    "blocks": (1,),
    "epochs": 8,
    "batch_size": 32,
    "lr": 1e-3,
    "buffer_size": 500,
    "verbose": False,
    "device": "cpu",
}
N_GENES = 30


def toy(n_per_type: int = 60, types: tuple[int, ...] = (0, 1, 2), seed: int = 0) -> AnnData:
    """Log-expression-like cells: type ``t`` raises genes ``5t .. 5t+4``; type 3 is the far one
    (its genes ``15 .. 19`` are raised three times as much)."""
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for t in types:
        x = rng.gamma(2.0, 0.25, size=(n_per_type, N_GENES))
        x[:, 5 * t : 5 * t + 5] += 2.0 if t < 3 else 6.0
        blocks.append(x)
        labels += [f"type {t}"] * n_per_type
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))]
    )
    var = pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)])
    return AnnData(np.vstack(blocks).astype(np.float32), obs=obs, var=var)
