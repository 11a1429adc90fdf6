"""ACsleuth's AnnData keys, and their writers and readers.

Every key is built from ``key_added`` (default ``"acsleuth"``) by :func:`keys`:

- ``obs[f"{key_added}_score"]``, ``obs[f"{key_added}_anomaly"]``: the called score and call
- ``obsm[f"X_{key_added}"]``: module I's encoder embedding; ``obsm[f"{key_added}_scores"]``:
  every score type computed (a DataFrame)
- ``layers[f"{key_added}_corrected"]`` or ``obsm[f"{key_added}_corrected"]``: the corrected
  expression (``layers`` when the AnnData's genes are the model's panel in order)
- ``obs[f"{key_added}_subtype"]``, ``obsm[f"X_{key_added}_subtype"]``: subtypes, and the
  embedding DESC clustered
- ``uns[key_added]``: ``params``, ``score``, ``threshold``, ``version``, ``backend``,
  ``seed``, ``timings`` (a nested stage keyed "stage > sub-stage"), ``n_subtypes``,
  ``silhouette_curve``, ``history`` (per-epoch losses of each trained stage), and with a
  ``batch_key`` ``batch_scale``: each batch's per-gene log-scale against the reference
  (a DataFrame, batches x panel genes; :mod:`acsleuth.stages.batch_scale`)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import KEY_ADDED
from . import params_record

if TYPE_CHECKING:
    from ..stages.score import ScoreResult
    from ..stages.subtype import SubtypeResult


@dataclass(frozen=True)
class Keys:
    """The names of everything ACsleuth writes under one ``key_added``."""

    key_added: str = KEY_ADDED

    @property
    def uns(self) -> str:
        return self.key_added

    @property
    def score(self) -> str:
        return f"{self.key_added}_score"

    @property
    def anomaly(self) -> str:
        return f"{self.key_added}_anomaly"

    @property
    def scores(self) -> str:
        return f"{self.key_added}_scores"

    @property
    def embedding(self) -> str:
        return f"X_{self.key_added}"

    @property
    def corrected(self) -> str:
        return f"{self.key_added}_corrected"

    @property
    def subtype(self) -> str:
        return f"{self.key_added}_subtype"

    @property
    def subtype_embedding(self) -> str:
        return f"X_{self.key_added}_subtype"

    @property
    def true_anomaly(self) -> str:
        """The truth column ``acsleuth run --label-key`` derives for its report."""
        return f"{self.key_added}_true_anomaly"


def keys(key_added: str = KEY_ADDED) -> Keys:
    """The keys of ``key_added``."""
    return Keys(key_added)


# ------------------------------------------------------------------ writers
def write_scores(
    adata: AnnData,
    result: ScoreResult,
    params: Mapping[str, Any],
    *,
    backend: str,
    timings: Mapping[str, float],
    score: str | None = None,
    key_added: str = KEY_ADDED,
) -> None:
    """Write ``obs`` score and call, ``obsm`` embedding and scores, and ``uns[key_added]``.

    ``params`` are the model's settings as used (``score`` defaults to theirs); ``backend``
    is the ops backend of the device that ran.
    """
    from .. import __version__

    k = keys(key_added)
    adata.obs[k.score] = pd.Series(result.score, index=adata.obs_names)
    adata.obs[k.anomaly] = pd.Series(result.anomaly, index=adata.obs_names)
    adata.obsm[k.embedding] = result.embedding.astype(np.float32)
    adata.obsm[k.scores] = pd.DataFrame(result.scores, index=adata.obs_names)
    adata.uns[k.uns] = {
        "params": params_record(params),
        "score": score or params["score"],
        "threshold": result.threshold,
        "version": __version__,
        "backend": backend,
        "seed": params["random_state"],
        "timings": dict(timings),
    }
    if result.batch_scale is not None:
        adata.uns[k.uns]["batch_scale"] = result.batch_scale


def corrected_slot(adata: AnnData, genes: Sequence[str]) -> str:
    """Where corrected expression goes: ``"layers"`` when ``adata``'s genes are ``genes`` (the
    model's panel) in order, else ``"obsm"``."""
    return "layers" if list(map(str, adata.var_names)) == list(genes) else "obsm"


def write_corrected(
    adata: AnnData, corrected: np.ndarray, genes: Sequence[str], key_added: str = KEY_ADDED
) -> None:
    """Store ``corrected`` under :func:`corrected_slot` (replacing an earlier one anywhere)."""
    name = keys(key_added).corrected
    for slot in (adata.layers, adata.obsm):
        if name in slot:
            del slot[name]
    getattr(adata, corrected_slot(adata, genes))[name] = corrected


def write_subtypes(
    adata: AnnData, anomaly: np.ndarray, result: SubtypeResult | None, key_added: str = KEY_ADDED
) -> None:
    """Subtypes of the anomalies (``result`` None: no anomaly, nothing subtyped)."""
    k = keys(key_added)
    n_subtypes = 0 if result is None else result.n_subtypes
    codes = np.full(adata.n_obs, -1, dtype=np.int64)
    width = 0 if result is None else result.embedding.shape[1]
    embedding = np.full((adata.n_obs, width), np.nan, dtype=np.float32)
    if result is not None:
        codes[anomaly] = result.labels
        embedding[anomaly] = result.embedding
    categories = [str(i) for i in range(n_subtypes)]
    adata.obs[k.subtype] = pd.Categorical.from_codes(codes, categories=categories)
    adata.obsm[k.subtype_embedding] = embedding
    curve = {} if result is None or result.silhouette_curve is None else result.silhouette_curve
    uns = adata.uns.setdefault(k.uns, {})
    uns["n_subtypes"] = n_subtypes
    uns["silhouette_curve"] = {str(i): float(v) for i, v in curve.items()}
    if result is not None:  # DESC's centroids: acsleuth.tl.explain_subtypes explains with them
        uns["subtype_centroids"] = result.centroids.astype(np.float32)


# ------------------------------------------------------------------ readers
def anomaly_calls(adata: AnnData, key_added: str, tool: str) -> np.ndarray:
    """``obs[f"{key_added}_anomaly"]`` as bools; a ``KeyError`` saying what to run when missing."""
    column = keys(key_added).anomaly
    if column not in adata.obs:
        raise KeyError(
            f"{tool}: obs[{column!r}] is missing; run acsleuth.tl.score_anomalies(adata, model, "
            f"key_added={key_added!r}) first"
        )
    return adata.obs[column].to_numpy(dtype=bool)


def run_batch_key(adata: AnnData, key_added: str = KEY_ADDED) -> str | None:
    """The ``batch_key`` the run under ``key_added`` was given (``uns[key_added]["params"]``),
    or None."""
    key = adata.uns.get(key_added, {}).get("params", {}).get("batch_key")
    return None if key is None else str(key)


def anomaly_rates(adata: AnnData, batch_key: str, key_added: str = KEY_ADDED) -> pd.DataFrame:
    """Cells, anomalies called and their fraction (``rate``) per ``obs[batch_key]`` category,
    in category order (a category without cells is left out); ``batch_key`` must be an
    ``obs`` column."""
    calls = anomaly_calls(adata, key_added, "anomaly_rates")
    batches = adata.obs[batch_key].astype("category")
    table = pd.DataFrame({"batch": batches.to_numpy(), "anomalies": calls})
    table = table.groupby("batch", observed=True)["anomalies"].agg(["size", "sum"])
    table.columns = ["cells", "anomalies"]
    table["rate"] = table["anomalies"] / table["cells"]
    return table


def corrected_expression(
    adata: AnnData,
    genes: Sequence[str],
    key_added: str,
    rows: np.ndarray,
    *,
    layer: str | None = None,
) -> np.ndarray:
    """Rows ``rows`` of the corrected expression written under ``key_added``, else of the
    prepared (uncorrected) expression on the panel ``genes`` (``layers[layer]`` when given):
    float32 ``(len(rows), G)``."""
    from ..data import prepare

    name = keys(key_added).corrected
    for slot in (adata.layers, adata.obsm):
        if name in slot:
            return np.asarray(slot[name][rows], dtype=np.float32)
    return prepare(adata, genes=list(genes), name="target", layer=layer).rows(rows)


__all__ = [
    "Keys",
    "anomaly_calls",
    "anomaly_rates",
    "corrected_expression",
    "corrected_slot",
    "keys",
    "run_batch_key",
    "write_corrected",
    "write_scores",
    "write_subtypes",
]
