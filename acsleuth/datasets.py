"""Benchmark data: a negative-binomial simulator and a held-out-cell-type split of PBMCs.

Both functions return ``(reference, target)``: the reference holds normal cells only, the
target holds normal and anomalous cells, with ``obs["cell_type"]`` (categorical) and
``obs["is_anomaly"]`` (bool) on both. :func:`write_synthetic` writes the simulator's output
to ``.h5ad`` files chunk by chunk, for atlas-sized data that does not fit in memory.
"""

from __future__ import annotations

import operator
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.io import sparse_dataset, write_elem

from ._atomic import atomic_path
from ._logging import progress

__all__ = ["PBMC_CELL_TYPES", "pbmc_holdout", "synthetic", "write_synthetic"]

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
_H5_CHUNK = 1 << 18  # elements per HDF5 chunk of the written X's data, indices and indptr


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


class _CountSampler:
    """Negative-binomial counts (gamma-Poisson) for cells whose mean profile is ``profiles[group]``.

    ``profiles`` rows sum to one. Creating the sampler draws every cell's log-normal library
    size from ``rng`` and spawns one child stream per block of ``_CHUNK_CELLS`` cells; block
    ``i`` comes from stream ``i`` alone, so the counts depend neither on the thread count nor
    on how blocks are grouped afterwards. Each block can be drawn once.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        profiles: np.ndarray,
        group: np.ndarray,
        dispersion: np.ndarray,
    ) -> None:
        self.n_cells, self.n_genes = len(group), profiles.shape[1]
        log_library = rng.normal(_LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD, self.n_cells)
        self._library = np.exp(log_library).astype(np.float32)
        self._starts = range(0, self.n_cells, _CHUNK_CELLS)
        self._streams = rng.spawn(len(self._starts))
        self._group = group
        self._profiles = profiles.astype(np.float32)
        self._gamma_shape = np.broadcast_to(
            (1.0 / dispersion).astype(np.float32), (_CHUNK_CELLS, self.n_genes)
        )
        self._gamma_scale = dispersion.astype(np.float32)

    def block(self, i: int, as_sparse: bool) -> sp.csr_matrix | np.ndarray:
        """Counts of block ``i``: float32 ``(<= _CHUNK_CELLS, n_genes)``, CSR or dense."""
        start = self._starts[i]
        cells = slice(start, min(start + _CHUNK_CELLS, self.n_cells))
        stream = self._streams[i]
        rate = stream.standard_gamma(self._gamma_shape[: cells.stop - start], dtype=np.float32)
        rate *= self._gamma_scale
        rate *= self._profiles[self._group[cells]]
        rate *= self._library[cells, None]
        counts = stream.poisson(rate)
        return _dense_to_csr(counts) if as_sparse else counts.astype(np.float32)

    def blocks(self, as_sparse: bool) -> Iterator[sp.csr_matrix | np.ndarray]:
        """Every block in order, drawn by up to ``os.cpu_count()`` threads a few blocks ahead.

        At most ``2 x threads`` blocks exist at a time besides those already yielded.
        """
        n_blocks = len(self._starts)
        workers = max(1, min(os.cpu_count() or 1, n_blocks))
        ahead = 2 * workers
        pool = ThreadPoolExecutor(workers)  # numpy samplers release the GIL
        pending: deque[Future] = deque()
        try:
            for i in range(n_blocks):
                pending.append(pool.submit(self.block, i, as_sparse))
                if len(pending) == ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def matrix(self, as_sparse: bool) -> sp.csr_matrix | np.ndarray:
        """All counts in one float32 matrix ``(n_cells, n_genes)``."""
        blocks = list(self.blocks(as_sparse))
        if as_sparse:
            return sp.vstack(blocks, format="csr", dtype=np.float32)
        return np.concatenate(blocks, axis=0)


@dataclass
class _Part:
    """The cells of one simulated AnnData: per-cell type and batch codes, and their counts."""

    prefix: str
    cell_type: np.ndarray
    type_names: list[str]
    batch: np.ndarray
    batch_names: list[str]
    counts: _CountSampler


@dataclass
class _Simulation:
    """One run of the simulator up to the counts, which ``reference.counts`` and
    ``target.counts`` draw on demand (once each)."""

    params: dict[str, Any]
    types: list[str]
    log_fold_change: np.ndarray  # (types, genes)
    batch_shift: np.ndarray  # (target batches, genes)
    reference: _Part
    target: _Part

    def annotations(self, part: _Part) -> dict[str, Any]:
        """``obs``, ``var`` and ``uns`` of ``part``: the AnnData keyword arguments but ``X``."""
        obs = pd.DataFrame(
            {
                "cell_type": pd.Categorical.from_codes(part.cell_type, categories=part.type_names),
                "is_anomaly": part.cell_type >= self.params["n_types"],
                "batch": pd.Categorical.from_codes(part.batch, categories=part.batch_names),
            },
            index=[f"{part.prefix}_{i}" for i in range(len(part.cell_type))],
        )
        genes = pd.Index([f"gene_{i}" for i in range(self.params["n_genes"])])
        uns = {
            **self.params,
            "types": np.array(self.types),
            "log_fold_change": self.log_fold_change.astype(np.float32),
            "batch_shift": self.batch_shift.astype(np.float32),
        }
        return {"obs": obs, "var": pd.DataFrame(index=genes), "uns": {"synthetic": uns}}


def _simulate(
    n_reference: int,
    n_target: int,
    n_genes: int,
    *,
    n_types: int,
    n_anomaly_types: int,
    anomaly_ratio: float,
    n_batches: int,
    batch_effect: float,
    sparse: bool,
    seed: int,
) -> _Simulation:
    """Check the arguments of :func:`synthetic` and draw everything but the counts."""
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
    # profile row of (type t, batch b) is t * n_batches + b; the reference uses batch 0's style.
    # The reference's library sizes and streams are drawn from rng before the target's.
    ref_counts = _CountSampler(rng, profiles, ref_type * n_batches, dispersion)
    tgt_counts = _CountSampler(rng, profiles, tgt_type * n_batches + tgt_batch, dispersion)
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
    ref_batch = np.zeros(n_reference, dtype=np.int8)
    reference = _Part("ref", ref_type, types[:n_types], ref_batch, ["reference"], ref_counts)
    target_batches = [f"target_{b}" for b in range(n_batches)]
    target = _Part("tgt", tgt_type, types, tgt_batch, target_batches, tgt_counts)
    return _Simulation(params, types, lfc, shift, reference, target)


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

    :func:`write_synthetic` writes the same data to ``.h5ad`` files in bounded memory.

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
    sim = _simulate(
        n_reference,
        n_target,
        n_genes,
        n_types=n_types,
        n_anomaly_types=n_anomaly_types,
        anomaly_ratio=anomaly_ratio,
        n_batches=n_batches,
        batch_effect=batch_effect,
        sparse=sparse,
        seed=seed,
    )
    reference, target = (
        AnnData(X=part.counts.matrix(sparse), **sim.annotations(part))
        for part in (sim.reference, sim.target)
    )
    return reference, target


def _rechunk(blocks: Iterable[sp.csr_matrix], size: int) -> Iterator[sp.csr_matrix]:
    """The rows of ``blocks`` regrouped into CSR matrices of ``size`` rows (the last: fewer)."""
    pending: list[sp.csr_matrix] = []
    count = 0
    for block in blocks:
        pending.append(block)
        count += block.shape[0]
        if count < size:
            continue
        merged = pending[0] if len(pending) == 1 else sp.vstack(pending, format="csr")
        if count == size:  # the common case: whole blocks make one chunk; no copy
            yield merged
            pending, count = [], 0
            continue
        full = count - count % size
        for start in range(0, full, size):
            yield merged[start : start + size]
        pending = [merged[full:]] if full < count else []
        count -= full
    if count:
        yield pending[0] if len(pending) == 1 else sp.vstack(pending, format="csr")


def _write_counts_h5ad(
    path: Path,
    annotations: dict[str, Any],
    counts: _CountSampler,
    *,
    chunk_cells: int,
    desc: str,
    verbose: bool,
) -> None:
    """Write ``annotations`` (obs, var, uns) to ``path``, then append ``counts`` to a CSR ``X``."""
    AnnData(**annotations).write_h5ad(path)
    del annotations  # the caller keeps no reference: the obs names are freed before X is drawn
    n_obs, n_vars = counts.n_cells, counts.n_genes
    most_nnz = n_obs * n_vars
    layout = {
        # resizable datasets in ~1 MB chunks, as h5py picks for large arrays written at once
        "chunks": (min(_H5_CHUNK, most_nnz),),
        "indptr_dtype": np.int32 if most_nnz < np.iinfo(np.int32).max else np.int64,
    }
    n_appends = -(-n_obs // chunk_cells)
    with h5py.File(path, "a") as f, closing(counts.blocks(as_sparse=True)) as blocks:
        write_elem(f, "X", sp.csr_matrix((0, n_vars), dtype=np.float32), dataset_kwargs=layout)
        x = sparse_dataset(f["X"])
        chunks = _rechunk(blocks, chunk_cells)
        for chunk in progress(chunks, desc=desc, total=n_appends, verbose=verbose):
            x.append(chunk)
        if x.shape != (n_obs, n_vars):  # a broken invariant, not a user error
            raise RuntimeError(f"wrote X of shape {x.shape}, expected {(n_obs, n_vars)}")


def write_synthetic(
    reference_path: str | os.PathLike,
    target_path: str | os.PathLike,
    n_reference: int,
    n_target: int,
    n_genes: int = 2000,
    *,
    n_types: int = 6,
    n_anomaly_types: int = 2,
    anomaly_ratio: float = 0.1,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    seed: int = 0,
    chunk_cells: int = 8192,
    overwrite: bool = False,
    verbose: bool = True,
) -> tuple[Path, Path]:
    """Write :func:`synthetic`'s data to two ``.h5ad`` files without holding the count matrix.

    The files read back equal to ``synthetic(n_reference, n_target, n_genes, ..., seed=seed)``
    (``X`` as float32 CSR, ``obs``, ``var`` and ``uns["synthetic"]``). ``obs``, ``var`` and
    ``uns`` are written first, then ``X`` is appended ``chunk_cells`` cells at a time while
    ``os.cpu_count()`` threads draw the next blocks of 2,048 cells. Memory is about 150 bytes
    per cell (mostly the obs names) plus O(chunk): with 2,000 genes, about 0.1 GB per
    sampling thread and 0.15 GB for ``chunk_cells=8192``. Each file is written under a
    temporary name beside its destination and renamed once both are complete; on any error
    neither destination changes.

    Parameters
    ----------
    reference_path, target_path
        Destinations of the reference and of the target (two different files).
    n_reference, n_target, n_genes
        Numbers of reference cells, target cells and genes, as for :func:`synthetic`.
    n_types, n_anomaly_types, anomaly_ratio, n_batches, batch_effect, seed
        As for :func:`synthetic` (``X`` is always sparse).
    chunk_cells
        Cells per append to ``X``; changes the memory used, not the data.
    overwrite
        Replace existing files; without it an existing destination is an error.
    verbose
        Progress bars (only when stderr is a terminal).

    Returns
    -------
    reference_path, target_path
        The paths written, as :class:`pathlib.Path`.
    """
    paths = []
    for name, value in (("reference_path", reference_path), ("target_path", target_path)):
        if not isinstance(value, str | os.PathLike):
            raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
        paths.append(Path(value))
    reference_path, target_path = paths
    if reference_path.resolve() == target_path.resolve():
        raise ValueError(f"reference_path and target_path are the same file: {reference_path}")
    chunk_cells = _check_int("chunk_cells", chunk_cells, 1)
    sim = _simulate(
        n_reference,
        n_target,
        n_genes,
        n_types=n_types,
        n_anomaly_types=n_anomaly_types,
        anomaly_ratio=anomaly_ratio,
        n_batches=n_batches,
        batch_effect=batch_effect,
        sparse=True,
        seed=seed,
    )
    with (
        atomic_path(reference_path, overwrite=overwrite) as reference_tmp,
        atomic_path(target_path, overwrite=overwrite) as target_tmp,
    ):
        for part, tmp, path in (
            (sim.reference, reference_tmp, reference_path),
            (sim.target, target_tmp, target_path),
        ):
            _write_counts_h5ad(
                tmp,
                sim.annotations(part),
                part.counts,
                chunk_cells=chunk_cells,
                desc=f"writing {path.name}",
                verbose=verbose,
            )
    return reference_path, target_path


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
