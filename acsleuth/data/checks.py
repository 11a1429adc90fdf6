"""Checks of a run's inputs made before any training, so that bad input costs seconds, not a fit.

Each check raises :class:`DataError` (or ``KeyError`` for a missing ``obs`` column) with the
message that the stage failing later would give; the stages call the same functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import NEEDS_MMD
from .errors import DataError
from .genes import no_shared_genes
from .source import prepare

MIN_MMD_CELLS = 4
"""Target cells the MMD score needs at least (two groups of two)."""


def check_reference_size(n_obs: int, world_size: int = 1) -> None:
    """Module I needs two reference cells per process (BatchNorm statistics)."""
    if n_obs < 2 * world_size:
        raise DataError(
            f"reference: {n_obs} cell(s); module I needs at least 2 normal cells "
            f"(BatchNorm statistics) per process ({world_size} processes)"
        )


def check_target_size(n_obs: int, score: str) -> None:
    """The MMD score (alone or in the ensemble) compares groups of target cells: it needs at
    least :data:`MIN_MMD_CELLS`."""
    if score in NEEDS_MMD and n_obs < MIN_MMD_CELLS:
        raise DataError(
            f"target: {n_obs} cell(s); the MMD score compares groups of target cells and needs "
            f"at least {MIN_MMD_CELLS} target cells (score more cells together, or use "
            "score='scaled', which scores each cell on its own)"
        )


def check_obs_column(
    adata: AnnData, key: str, *, option: str, name: str = "target"
) -> pd.Categorical:
    """``adata.obs[key]`` as a categorical; a missing column or a missing value is refused."""
    if key not in adata.obs:
        raise KeyError(
            f"{name}: {option} {key!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    values = pd.Categorical(adata.obs[key])
    if (values.codes < 0).any():
        raise DataError(
            f"{name}: obs[{key!r}] has missing values; every cell needs a value ({option})"
        )
    return values


def check_inputs(
    reference: AnnData | str | os.PathLike | None,
    target: AnnData | str | os.PathLike,
    *,
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    score: str = "mmd",
) -> None:
    """Refuse what a run on ``reference`` and ``target`` would fail on after training.

    Reads both inputs once (values: NaN, infinite, negative; sizes; the layer), checks that the
    target shares genes with ``genes`` (a fitted model's panel; the reference's genes when
    None), that the reference does too when both are given, and that ``batch_key`` is a
    complete ``obs`` column of the target. Genes that match only ignoring case, or Ensembl IDs
    against gene symbols, are named in the message.
    """
    panel = None if genes is None else pd.Index([str(g) for g in genes])
    if reference is not None:
        source = prepare(reference, name="reference", layer=layer)
        check_reference_size(source.n_obs)
        if panel is None:
            panel = pd.Index(source.genes)
        else:
            _require_overlap(source.var_names, panel, "reference")
    source = prepare(target, name="target", layer=layer)
    if panel is not None:
        _require_overlap(source.var_names, panel, "target")
    check_target_size(source.n_obs, score)
    if batch_key is not None:
        check_obs_column(source.adata, batch_key, option="batch_key")


def _require_overlap(var_names: pd.Index, panel: pd.Index, name: str) -> None:
    if not np.any(var_names.get_indexer(panel) >= 0):
        raise DataError(no_shared_genes(var_names, panel, name))
