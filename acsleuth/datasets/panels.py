"""ACE's simulation of explanatory gene panels: causal, dependent and noise genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .simulator import check_int


def causal_panels(
    n_cells: int = 500,
    n_groups: int = 5,
    *,
    n_causal: int = 20,
    n_dependent: int = 100,
    n_noise: int = 100,
    complex: bool = False,
    seed: int = 0,
) -> AnnData:
    """ACE's simulation (seed 003, docs/method.md §8.3): causal, dependent and noise genes.

    Log-scale expression of ``n_cells`` cells in ``n_groups`` groups (SymSim is replaced by
    a Gaussian model). Causal gene ``g`` is shifted by ``+-U(1, 2)`` in group
    ``g mod n_groups`` (and, with probability 0.3, in a second group) around a baseline
    ``U(0.5, 2.5)``, with per-cell noise ``N(0, 0.5)``. Noise genes have no group effect.
    Dependent genes are weighted sums of 1-10 random causal genes, weights ``U(0.01, 0.8)``,
    plus ``N(0, 1)``. ``complex=True`` adds two batches (a gene-wise shift ``N(0, 0.5)`` of
    the second) and dropout (a value ``v`` is zeroed with probability
    ``1 / (1 + exp(2 v - 1))``) to the causal and noise genes before the dependent genes are
    formed; the same seed gives the same genes, effects and weights in both versions. All
    values are clipped at 0.

    Returns
    -------
    AnnData
        ``X`` float32 ``(n_cells, n_causal + n_dependent + n_noise)``, ``obs["group"]`` and
        ``obs["batch"]`` (categorical), ``var["role"]`` (``"causal"``, ``"dependent"`` or
        ``"noise"``), ``uns["causal_panels"]`` the parameters.
    """
    n_cells = check_int("n_cells", n_cells, 2)
    n_groups = check_int("n_groups", n_groups, 2)
    n_causal = check_int("n_causal", n_causal, 1)
    n_dependent = check_int("n_dependent", n_dependent, 0)
    n_noise = check_int("n_noise", n_noise, 0)
    rng = np.random.default_rng(seed)
    group = rng.permutation(np.arange(n_cells) % n_groups)
    effect = np.zeros((n_groups, n_causal))
    for g in range(n_causal):
        hit = [g % n_groups] + ([int(rng.integers(n_groups))] if rng.random() < 0.3 else [])
        effect[hit, g] = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0, len(hit))
    causal = (
        rng.uniform(0.5, 2.5, n_causal) + effect[group] + rng.normal(0, 0.5, (n_cells, n_causal))
    )
    noise = rng.uniform(0.5, 2.5, n_noise) + rng.normal(0, 1, (n_cells, n_noise)) * rng.uniform(
        0.3, 1.0, n_noise
    )
    parents = [
        rng.choice(n_causal, rng.integers(1, min(10, n_causal) + 1), replace=False)
        for _ in range(n_dependent)
    ]
    weights = [rng.uniform(0.01, 0.8, len(p)) for p in parents]
    dependent_noise = rng.normal(0, 1, (n_cells, n_dependent))
    batch = rng.integers(0, 2, n_cells)
    shift = rng.normal(0, 0.5, n_causal + n_noise)
    dropout_draw = rng.random((n_cells, n_causal + n_noise))
    measured = np.clip(np.hstack([causal, noise]), 0.0, None)
    if complex:
        measured = np.clip(measured + shift * batch[:, None], 0.0, None)
        measured[dropout_draw < 1.0 / (1.0 + np.exp(2.0 * measured - 1.0))] = 0.0
    else:
        batch = np.zeros(n_cells, dtype=np.int64)
    causal, noise = measured[:, :n_causal], measured[:, n_causal:]
    dependent = (
        np.stack([causal[:, p] @ w for p, w in zip(parents, weights, strict=True)], axis=1)
        if parents
        else (np.zeros((n_cells, 0)))
    )
    dependent = np.clip(dependent + dependent_noise, 0.0, None)
    roles = ["causal"] * n_causal + ["dependent"] * n_dependent + ["noise"] * n_noise
    width = len(str(len(roles) - 1))
    var = pd.DataFrame(
        {"role": pd.Categorical(roles, categories=["causal", "dependent", "noise"])},
        index=[f"g{i:0{width}d}" for i in range(len(roles))],
    )
    obs = pd.DataFrame(
        {"group": pd.Categorical(group.astype(str)), "batch": pd.Categorical(batch.astype(str))},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    params = {
        "n_cells": n_cells,
        "n_groups": n_groups,
        "n_causal": n_causal,
        "n_dependent": n_dependent,
        "n_noise": n_noise,
        "complex": bool(complex),
        "seed": seed,
    }
    x = np.hstack([causal, dependent, noise]).astype(np.float32)
    return AnnData(X=x, obs=obs, var=var, uns={"causal_panels": params})
