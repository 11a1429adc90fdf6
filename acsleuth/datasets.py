"""Benchmark data: a negative-binomial simulator and a held-out-cell-type split of PBMCs.

Both functions return ``(reference, target)``: the reference holds normal cells only, the
target holds normal and anomalous cells, with ``obs["cell_type"]`` (categorical) and
``obs["is_anomaly"]`` (bool) on both.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

__all__ = ["PBMC_CELL_TYPES", "pbmc_holdout", "synthetic"]

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

# Simulator constants (natural-log scale unless stated otherwise).
_BASE_LOG_SD = 1.5  # spread of per-gene baseline log-means
_UP_FRACTION = 0.05  # genes up-regulated by each cell-type program
_DOWN_FRACTION = 0.02  # genes down-regulated by each cell-type program
_LFC_MEAN, _LFC_SD = 1.5, 0.4  # |log-fold change| of program genes
_LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD = np.log(4500.0), 0.4  # UMIs per cell: ~2k-10k
_DISPERSION_LOG_MEAN, _DISPERSION_LOG_SD = np.log(0.1), 0.5  # NB: var = mu + phi * mu^2
_TYPE_CONCENTRATION = 5.0  # Dirichlet concentration of normal cell-type proportions
_CHUNK_CELLS = 2048  # cells sampled per independent random stream


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got a bool")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_fraction(name: str, value: float, *, allow_zero: bool) -> float:
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _check_batch_effect(value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0.0):
        raise ValueError(f"batch_effect must be finite and >= 0, got {value}")
    return value


def _type_programs(rng: np.random.Generator, n_types: int, n_genes: int) -> np.ndarray:
    """Log-fold changes ``(n_types, n_genes)``: each type raises ~5% of genes, lowers ~2%."""
    n_up = max(1, round(_UP_FRACTION * n_genes))
    n_down = max(1, round(_DOWN_FRACTION * n_genes))
    genes = np.argsort(rng.random((n_types, n_genes)), axis=1)[:, : n_up + n_down]
    magnitude = np.maximum(rng.normal(_LFC_MEAN, _LFC_SD, genes.shape), 0.0)
    sign = np.where(np.arange(n_up + n_down) < n_up, 1.0, -1.0)
    lfc = np.zeros((n_types, n_genes))
    np.put_along_axis(lfc, genes, magnitude * sign, axis=1)
    return lfc


def _dense_to_csr(counts: np.ndarray) -> sp.csr_matrix:
    """float32 CSR copy of a dense count block (faster than ``csr_matrix(dense)``)."""
    n_rows, n_cols = counts.shape
    flat = np.flatnonzero(counts)
    indptr = np.searchsorted(flat, np.arange(0, n_rows * n_cols + 1, n_cols))
    data = counts.ravel()[flat].astype(np.float32)
    return sp.csr_matrix((data, (flat % n_cols).astype(np.int32), indptr), shape=counts.shape)


def _sample_counts(
    rng: np.random.Generator,
    profiles: np.ndarray,
    group: np.ndarray,
    dispersion: np.ndarray,
    as_sparse: bool,
) -> sp.csr_matrix | np.ndarray:
    """Negative-binomial counts (gamma-Poisson) for cells whose mean profile is ``profiles[group]``.

    ``profiles`` rows sum to one; each cell draws a log-normal library size. Chunks of cells use
    independent child streams of ``rng``, so the result does not depend on the thread count.
    """
    n_cells, n_genes = len(group), profiles.shape[1]
    library = np.exp(rng.normal(_LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD, n_cells)).astype(np.float32)
    starts = range(0, n_cells, _CHUNK_CELLS)
    streams = rng.spawn(len(starts))
    profiles = profiles.astype(np.float32)
    gamma_shape = np.broadcast_to((1.0 / dispersion).astype(np.float32), (_CHUNK_CELLS, n_genes))
    gamma_scale = dispersion.astype(np.float32)

    def chunk(start: int, stream: np.random.Generator) -> sp.csr_matrix | np.ndarray:
        stop = min(start + _CHUNK_CELLS, n_cells)
        cells = slice(start, stop)
        rate = stream.standard_gamma(gamma_shape[: stop - start], dtype=np.float32)
        rate *= gamma_scale
        rate *= profiles[group[cells]]
        rate *= library[cells, None]
        counts = stream.poisson(rate)
        return _dense_to_csr(counts) if as_sparse else counts.astype(np.float32)

    workers = max(1, min(os.cpu_count() or 1, len(starts)))
    with ThreadPoolExecutor(workers) as pool:  # numpy samplers release the GIL
        blocks = list(pool.map(chunk, starts, streams))
    if as_sparse:
        return sp.vstack(blocks, format="csr", dtype=np.float32)
    return np.concatenate(blocks, axis=0)


def synthetic(
    n_reference: int = 5000,
    n_target: int = 5000,
    n_genes: int = 2000,
    *,
    n_types: int = 6,
    n_anomaly_types: int = 2,
    anomaly_ratio: float = 0.1,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    sparse: bool = True,
    seed: int = 0,
) -> tuple[AnnData, AnnData]:
    """Simulate UMI counts of a normal reference and a target with planted anomalous types.

    Each gene has a log-normal baseline mean. Every cell type, normal or anomalous, has its own
    program: ~5% of genes up by a log-fold change ~ N(1.5, 0.4) (natural log), ~2% down by the
    same amount. Cells draw a log-normal library size (median 4,500 UMIs) and negative-binomial
    counts with a per-gene dispersion.

    The reference holds the ``n_types`` normal types and forms batch ``"reference"``. The
    target holds the same types (same expected proportions) plus ``n_anomaly_types`` anomalous
    types, which make up exactly ``round(anomaly_ratio * n_target)`` cells (split evenly between
    them). Target cells are split evenly over batches ``"target_0"``, ``"target_1"``, ...
    Batch ``target_0`` shares the reference's style; each further batch multiplies gene means by
    its own ``exp(N(0, batch_effect))`` per gene (means renormalised, so library sizes keep
    their distribution). With ``n_batches=1`` the target has no batch effect.

    Parameters
    ----------
    n_reference, n_target, n_genes
        Numbers of reference cells, target cells and genes.
    n_types, n_anomaly_types
        Numbers of normal and of anomalous cell types.
    anomaly_ratio
        Fraction of target cells that are anomalous, in ``[0, 1)``.
    n_batches, batch_effect
        Number of target batches and the standard deviation of their per-gene log-shift.
    sparse
        Return ``X`` as CSR (``True``) or dense; float32 counts either way.
    seed
        Seed of ``numpy.random.default_rng``; the output is a function of it.

    Returns
    -------
    reference, target
        AnnData with ``obs`` columns ``cell_type``, ``is_anomaly`` and ``batch``, and
        ``uns["synthetic"]`` holding the parameters, the type names (``types``), their
        log-fold changes (``log_fold_change``, types x genes) and the per-batch log-shifts
        (``batch_shift``, batches x genes).
    """
    n_reference = _check_int("n_reference", n_reference, 1)
    n_target = _check_int("n_target", n_target, 1)
    n_genes = _check_int("n_genes", n_genes, 2)
    n_types = _check_int("n_types", n_types, 1)
    n_anomaly_types = _check_int("n_anomaly_types", n_anomaly_types, 0)
    n_batches = _check_int("n_batches", n_batches, 1)
    anomaly_ratio = _check_fraction("anomaly_ratio", anomaly_ratio, allow_zero=True)
    batch_effect = _check_batch_effect(batch_effect)
    if anomaly_ratio > 0.0 and n_anomaly_types == 0:
        raise ValueError("anomaly_ratio > 0 needs n_anomaly_types >= 1")
    n_anomalies = round(anomaly_ratio * n_target)
    if n_anomalies == n_target:
        raise ValueError(f"anomaly_ratio={anomaly_ratio} leaves no normal cell in the target")

    rng = np.random.default_rng(seed)
    types = [f"type_{i}" for i in range(n_types)]
    types += [f"anomaly_{i}" for i in range(n_anomaly_types)]
    lfc = _type_programs(rng, len(types), n_genes)
    shift = np.zeros((n_batches, n_genes))
    shift[1:] = rng.normal(0.0, batch_effect, (n_batches - 1, n_genes))
    dispersion = np.exp(rng.normal(_DISPERSION_LOG_MEAN, _DISPERSION_LOG_SD, n_genes))
    log_mean = rng.normal(0.0, _BASE_LOG_SD, n_genes) + lfc[:, None, :] + shift[None, :, :]
    profiles = np.exp(log_mean - log_mean.max(axis=2, keepdims=True))
    profiles = (profiles / profiles.sum(axis=2, keepdims=True)).reshape(-1, n_genes)

    proportions = rng.dirichlet(np.full(n_types, _TYPE_CONCENTRATION))
    ref_type = rng.choice(n_types, n_reference, p=proportions)
    tgt_type = np.concatenate(
        [
            rng.choice(n_types, n_target - n_anomalies, p=proportions),
            n_types + np.arange(n_anomalies) % n_anomaly_types,
        ]
    )
    tgt_type = rng.permutation(tgt_type)
    tgt_batch = rng.permutation(np.arange(n_target) % n_batches)
    # profile row of (type t, batch b) is t * n_batches + b; the reference uses batch 0's style
    x_ref = _sample_counts(rng, profiles, ref_type * n_batches, dispersion, sparse)
    x_tgt = _sample_counts(rng, profiles, tgt_type * n_batches + tgt_batch, dispersion, sparse)

    genes = pd.Index([f"gene_{i}" for i in range(n_genes)])
    target_batches = [f"target_{b}" for b in range(n_batches)]
    params = {
        "n_reference": n_reference,
        "n_target": n_target,
        "n_genes": n_genes,
        "n_types": n_types,
        "n_anomaly_types": n_anomaly_types,
        "anomaly_ratio": anomaly_ratio,
        "n_batches": n_batches,
        "batch_effect": batch_effect,
        "sparse": sparse,
        "seed": seed,
    }

    def build(
        x: sp.csr_matrix | np.ndarray,
        type_idx: np.ndarray,
        categories: list[str],
        batch: np.ndarray,
        batch_categories: list[str],
        prefix: str,
    ) -> AnnData:
        obs = pd.DataFrame(
            {
                "cell_type": pd.Categorical.from_codes(type_idx, categories=categories),
                "is_anomaly": type_idx >= n_types,
                "batch": pd.Categorical(batch, categories=batch_categories),
            },
            index=[f"{prefix}_{i}" for i in range(len(type_idx))],
        )
        uns = {
            **params,
            "types": np.array(types),
            "log_fold_change": lfc.astype(np.float32),
            "batch_shift": shift.astype(np.float32),
        }
        return AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes.copy()), uns={"synthetic": uns})

    reference = build(
        x_ref, ref_type, types[:n_types], np.full(n_reference, "reference"), ["reference"], "ref"
    )
    target = build(
        x_tgt, tgt_type, types, np.array(target_batches)[tgt_batch], target_batches, "tgt"
    )
    return reference, target


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
    reference_fraction = _check_fraction("reference_fraction", reference_fraction, allow_zero=False)
    if anomaly_ratio is not None:
        anomaly_ratio = _check_fraction("anomaly_ratio", anomaly_ratio, allow_zero=False)
    n_batches = _check_int("n_batches", n_batches, 1)
    batch_effect = _check_batch_effect(batch_effect)

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
