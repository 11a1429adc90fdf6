"""The AnnData contract shared by every tool: copy handling, ``uns`` records, batch codes.

Each tool's own keys, writers and readers live in a module of this package named after it
(:mod:`acsleuth._anndata.detect` for ACsleuth's); what they share is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData


def annotated(target: AnnData, copy: bool, tool: str) -> AnnData:
    """The AnnData a ``tl`` tool writes into: ``target`` itself, or a copy with ``copy=True``."""
    if not isinstance(target, AnnData):
        raise TypeError(f"{tool}: target must be an AnnData, got {type(target).__name__}")
    return target.copy() if copy else target


def params_record(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as ``uns[key]["params"]`` stores them (``None`` written as ``"None"``: h5ad
    has no null)."""
    return {k: ("None" if v is None else v) for k, v in params.items()}


def add_timings(adata: AnnData, key: str, timings: Mapping[str, float]) -> None:
    """Add ``timings`` (seconds per stage) to ``uns[key]["timings"]``."""
    uns = adata.uns.setdefault(key, {})
    uns["timings"] = {**uns.get("timings", {}), **timings}


def batch_codes(adata: AnnData, batch_key: str | None) -> tuple[np.ndarray, int]:
    """``(n_obs,)`` int64 codes of ``adata.obs[batch_key]`` (its categories) and their number."""
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64), 1
    if batch_key not in adata.obs:
        raise KeyError(
            f"target: batch_key {batch_key!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    batches = pd.Categorical(adata.obs[batch_key])
    if (batches.codes < 0).any():
        raise ValueError(f"target: obs[{batch_key!r}] has missing values; every cell needs a batch")
    return batches.codes.astype(np.int64), len(batches.categories)


__all__ = ["add_timings", "annotated", "batch_codes", "params_record"]
