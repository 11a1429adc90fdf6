"""Writing the simulator's data to ``.h5ad`` files chunk by chunk (:func:`write_synthetic`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from anndata.io import sparse_dataset, write_elem

from .._atomic import atomic_path
from .._logging import progress
from .simulator import CountSampler, check_int, simulate

_H5_CHUNK = 1 << 18  # elements per HDF5 chunk of the written X's data, indices and indptr


def rechunk(blocks: Iterable[sp.csr_matrix], size: int) -> Iterator[sp.csr_matrix]:
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
    counts: CountSampler,
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
        chunks = rechunk(blocks, chunk_cells)
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
    chunk_cells = check_int("chunk_cells", chunk_cells, 1)
    sim = simulate(
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


__all__ = ["rechunk", "write_synthetic"]
