"""The AnnData contract shared by every tool: copy handling, ``uns`` records, batch codes.

Each tool's own keys, writers and readers live in a module of this package named after it
(:mod:`acsleuth._anndata.detect` for ACsleuth's); what they share is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from anndata import AnnData


def annotated(target: AnnData, copy: bool, tool: str) -> AnnData:
    """The AnnData a ``tl`` tool writes into: ``target`` itself, or a copy with ``copy=True``."""
    if not isinstance(target, AnnData):
        raise TypeError(f"{tool}: target must be an AnnData, got {type(target).__name__}")
    return target.copy() if copy else target


def params_record(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as ``uns[key]["params"]`` stores them: a setting that is ``None`` is left out
    (h5ad has no null), so ``params.get(name)`` reads it back as None."""
    return {k: v for k, v in params.items() if v is not None}


def source_path(data: Any) -> str | None:
    """Where an input was read from, for ``uns[key]["params"]``: its resolved path (a backed
    AnnData's file); None for an AnnData in memory (or no input)."""
    from pathlib import Path

    if isinstance(data, AnnData):
        return str(Path(data.filename).resolve()) if data.isbacked else None
    return None if data is None else str(Path(data).resolve())


def add_timings(adata: AnnData, key: str, timings: Mapping[str, float]) -> None:
    """Add ``timings`` (seconds per stage) to ``uns[key]["timings"]``."""
    uns = adata.uns.setdefault(key, {})
    uns["timings"] = {**uns.get("timings", {}), **timings}


def add_history(
    adata: AnnData, key: str, history: Mapping[str, Sequence[Mapping[str, float]]]
) -> None:
    """Add per-epoch losses to ``uns[key]["history"]`` as ``{stage: {loss: (epochs,) float
    array}}`` (``history`` maps a stage to one ``{loss: value}`` per epoch; a stage that ran
    no epoch is left out)."""
    uns = adata.uns.setdefault(key, {})
    stored = dict(uns.get("history", {}))
    for stage, epochs in history.items():
        if len(epochs):
            names = list(epochs[0])
            stored[stage] = {n: np.array([e[n] for e in epochs], dtype=np.float64) for n in names}
    uns["history"] = stored


def batch_codes(adata: AnnData, batch_key: str | None) -> tuple[np.ndarray, int]:
    """``(n_obs,)`` int64 codes of ``adata.obs[batch_key]`` (its categories) and their number."""
    from ..data.checks import check_obs_column

    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64), 1
    batches = check_obs_column(adata, batch_key, option="batch_key")
    return batches.codes.astype(np.int64), len(batches.categories)


__all__ = ["add_history", "add_timings", "annotated", "batch_codes", "params_record", "source_path"]
