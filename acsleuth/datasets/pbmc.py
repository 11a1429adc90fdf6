"""A held-out-cell-type split of scanpy's pbmc68k_reduced (:func:`pbmc_holdout`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .simulator import check_batch_effect, check_fraction, check_int

#: Categories of ``obs["bulk_labels"]`` in ``scanpy.datasets.pbmc68k_reduced()``.
#: Categories of ``obs["bulk_labels"]`` in ``scanpy.datasets.pbmc68k_reduced()``.
PBMC_CELL_TYPES: tuple[str, ...] = (
    "CD4+/CD25 T Reg",
    "CD4+/CD45RA+/CD25- Naive T",
    "CD4+/CD45RO+ Memory",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
    "CD14+ Monocyte",
    "CD19+ B",
    "CD34+",
    "CD56+ NK",
    "Dendritic",
)


def _target_sizes(n_normal: int, n_anomalous: int, ratio: float) -> tuple[int, int]:
    """Largest (normal, anomalous) counts, both >= 1, with anomalous == round(ratio * total)."""
    total = np.arange(n_normal + n_anomalous, 0, -1)
    anomalous = np.rint(ratio * total).astype(int)
    normal = total - anomalous
    feasible = (anomalous >= 1) & (anomalous <= n_anomalous) & (normal >= 1) & (normal <= n_normal)
    if not feasible.any():
        raise ValueError(
            f"cannot reach anomaly_ratio={ratio} with {n_normal} normal and "
            f"{n_anomalous} anomalous target cells"
        )
    best = int(np.argmax(feasible))
    return int(normal[best]), int(anomalous[best])


def pbmc_holdout(
    held_out: str | Sequence[str] = "CD19+ B",
    *,
    reference_fraction: float = 0.5,
    anomaly_ratio: float | None = None,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    seed: int = 0,
) -> tuple[AnnData, AnnData]:
    """Split scanpy's ``pbmc68k_reduced`` into a reference and a target with held-out types.

    Uses the log-normalised expression in ``.raw`` (700 cells x 765 genes) and the labels in
    ``obs["bulk_labels"]``. Cells of the held-out types are the anomalies. The reference is a
    random ``reference_fraction`` of every other type (stratified); the target is the rest of
    the normal cells plus all held-out cells. Embeddings, graphs and ``uns`` of the source are
    dropped: they were computed on all cells, held-out ones included.

    Parameters
    ----------
    held_out
        One or more names from :data:`PBMC_CELL_TYPES`.
    reference_fraction
        Fraction of each normal type placed in the reference, in ``(0, 1)``.
    anomaly_ratio
        If given, subsample the target's anomalies or its normal cells (whichever is in excess,
        keeping the target as large as possible) so that exactly
        ``round(anomaly_ratio * n_target)`` target cells are anomalous.
    n_batches, batch_effect
        Target cells are split at random, evenly, over batches ``"target_0"``, ``"target_1"``,
        ... (``obs["batch"]``; the reference is batch ``"reference"``). ``target_0`` is left
        as measured; each further batch scales the normalised expression of every gene by its
        own ``exp(s_g)``, ``s ~ N(0, batch_effect)`` centred to mean 0, i.e.
        ``x' = log1p(expm1(x) * exp(s_g))``, which keeps zeros at zero.
    seed
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    reference, target
        Independent AnnData objects with ``obs["cell_type"]`` (categorical),
        ``obs["is_anomaly"]`` (bool) and ``obs["batch"]`` (categorical) besides the source's
        ``obs`` columns, and ``uns["pbmc_holdout"]`` holding the parameters and the per-batch
        log-shifts (``batch_shift``, batches x genes).
    """
    import scanpy as sc  # slow to import; only this loader needs it

    held = [held_out] if isinstance(held_out, str) else list(held_out)
    unknown = sorted(set(held) - set(PBMC_CELL_TYPES))
    if unknown:
        raise ValueError(f"unknown cell types {unknown}; valid types are {list(PBMC_CELL_TYPES)}")
    if not held:
        raise ValueError("held_out names no cell type")
    if set(held) == set(PBMC_CELL_TYPES):
        raise ValueError("held_out names every cell type; no normal cell would be left")
    reference_fraction = check_fraction("reference_fraction", reference_fraction, allow_zero=False)
    if anomaly_ratio is not None:
        anomaly_ratio = check_fraction("anomaly_ratio", anomaly_ratio, allow_zero=False)
    n_batches = check_int("n_batches", n_batches, 1)
    batch_effect = check_batch_effect(batch_effect)

    source = sc.datasets.pbmc68k_reduced()
    labels = source.obs["bulk_labels"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    reference_idx, normal_idx = [], []
    for cell_type in sorted(set(labels) - set(held)):
        cells = rng.permutation(np.flatnonzero(labels == cell_type))
        n_ref = round(reference_fraction * len(cells))
        reference_idx.append(cells[:n_ref])
        normal_idx.append(cells[n_ref:])
    reference_idx = np.sort(np.concatenate(reference_idx))
    normal_idx = np.sort(np.concatenate(normal_idx))
    anomalous_idx = np.flatnonzero(np.isin(labels, held))
    if len(reference_idx) == 0:
        raise ValueError(f"reference_fraction={reference_fraction} leaves the reference empty")
    if anomaly_ratio is not None:
        n_normal, n_anomalous = _target_sizes(len(normal_idx), len(anomalous_idx), anomaly_ratio)
        normal_idx = np.sort(rng.choice(normal_idx, n_normal, replace=False))
        anomalous_idx = np.sort(rng.choice(anomalous_idx, n_anomalous, replace=False))
    target_idx = np.sort(np.concatenate([normal_idx, anomalous_idx]))

    expression = source.raw.to_adata()
    shift = np.zeros((n_batches, expression.n_vars))
    target_batch = np.zeros(len(target_idx), dtype=np.int64)
    if n_batches > 1:  # drawn last: one batch leaves the split of earlier versions unchanged
        shift[1:] = rng.normal(0.0, batch_effect, (n_batches - 1, expression.n_vars))
        shift[1:] -= shift[1:].mean(axis=1, keepdims=True)
        target_batch = rng.permutation(np.arange(len(target_idx)) % n_batches)
    params = {
        "held_out": list(held),
        "reference_fraction": reference_fraction,
        "anomaly_ratio": anomaly_ratio,
        "n_batches": n_batches,
        "batch_effect": batch_effect,
        "seed": seed,
    }

    def build(idx: np.ndarray, batch: np.ndarray, batch_names: list[str]) -> AnnData:
        x = sp.csr_matrix(expression.X[idx], dtype=np.float32)
        scale = np.exp(shift[batch]).astype(np.float32)  # (cells, genes); row 0 is all ones
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        x.data = np.log1p(np.expm1(x.data) * scale[rows, x.indices])
        obs = expression.obs.iloc[idx].copy()
        obs["cell_type"] = pd.Categorical(labels[idx])
        obs["is_anomaly"] = np.isin(labels[idx], held)
        obs["batch"] = pd.Categorical(np.array(batch_names)[batch], categories=batch_names)
        uns = {"pbmc_holdout": {**params, "batch_shift": shift.astype(np.float32)}}
        return AnnData(X=x, obs=obs, var=expression.var.copy(), uns=uns)

    target_names = [f"target_{b}" for b in range(n_batches)]
    reference = build(reference_idx, np.zeros(len(reference_idx), dtype=np.int64), ["reference"])
    return reference, build(target_idx, target_batch, target_names)


__all__ = ["PBMC_CELL_TYPES", "pbmc_holdout"]
