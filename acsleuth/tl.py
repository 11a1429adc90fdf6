"""Tools in scanpy style: take an AnnData first, write results into it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from . import ops

if TYPE_CHECKING:
    from .model import ACsleuth, Score


def score_anomalies(
    target: AnnData,
    model: ACsleuth,
    *,
    score: Score | None = None,
    key_added: str = "acsleuth",
    copy: bool = False,
) -> AnnData | None:
    """Score and call anomalies in ``target`` with a fitted :class:`~acsleuth.ACsleuth`.

    Parameters
    ----------
    target
        Cells to screen (in memory or backed); genes are matched to the model's by name.
    model
        A fitted (or loaded) model.
    score
        Score type; default: the model's.
    key_added
        Prefix of every key written.
    copy
        Return an annotated copy instead of writing into ``target``.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``), having written

    - ``obs[f"{key_added}_score"]``: anomaly score, higher = more anomalous
    - ``obs[f"{key_added}_anomaly"]``: bool anomaly call
    - ``obsm[f"X_{key_added}"]``: encoder embedding, ``(n_obs, 256)``
    - ``obsm[f"{key_added}_scores"]``: every score type computed (a DataFrame, a column each)
    - ``uns[key_added]``: ``params``, ``score``, ``threshold``, ``version``, ``backend``,
      ``seed`` and ``timings`` (seconds per stage)
    """
    from . import __version__

    if not isinstance(target, AnnData):
        raise TypeError(f"score_anomalies: target must be an AnnData, got {type(target).__name__}")
    adata = target.copy() if copy else target
    result = model.evaluate(adata, score=score)
    adata.obs[f"{key_added}_score"] = pd.Series(result.score, index=adata.obs_names)
    adata.obs[f"{key_added}_anomaly"] = pd.Series(result.anomaly, index=adata.obs_names)
    adata.obsm[f"X_{key_added}"] = result.embedding.astype(np.float32)
    adata.obsm[f"{key_added}_scores"] = pd.DataFrame(result.scores, index=adata.obs_names)
    adata.uns[key_added] = {
        "params": {k: ("None" if v is None else v) for k, v in model.params.items()},
        "score": score or model.params["score"],
        "threshold": result.threshold,
        "version": __version__,
        "backend": ops.backend(),
        "seed": model.params["random_state"],
        "timings": {**model.timings_, **result.timings},
    }
    return adata if copy else None
