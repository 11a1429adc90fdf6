"""The negative-binomial simulator of :func:`synthetic` (reference and target in memory)."""

from __future__ import annotations

import operator
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

# Simulator constants (natural-log scale unless stated otherwise).
_BASE_LOG_SD = 1.5  # spread of per-gene baseline log-means
_UP_FRACTION = 0.05  # genes up-regulated by each cell-type program
_DOWN_FRACTION = 0.02  # genes down-regulated by each cell-type program
_LFC_MEAN, _LFC_SD = 1.5, 0.4  # |log-fold change| of program genes
_LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD = np.log(4500.0), 0.4  # UMIs per cell: ~2k-10k
_DISPERSION_LOG_MEAN, _DISPERSION_LOG_SD = np.log(0.1), 0.5  # NB: var = mu + phi * mu^2
_TYPE_CONCENTRATION = 5.0  # Dirichlet concentration of normal cell-type proportions
IMBALANCE = 20.0  # largest / smallest type share with proportions="long_tail"
CHUNK_CELLS = 2048  # cells sampled per independent random stream


def check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got a bool")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_fraction(name: str, value: float, *, allow_zero: bool) -> float:
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_batch_effect(value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0.0):
        raise ValueError(f"batch_effect must be finite and >= 0, got {value}")
    return value


def _check_proportions(proportions: str, imbalance: float) -> float:
    if proportions not in ("dirichlet", "long_tail"):
        raise ValueError(f"proportions must be 'dirichlet' or 'long_tail', got {proportions!r}")
    imbalance = float(imbalance)
    if not (np.isfinite(imbalance) and imbalance >= 1.0):
        raise ValueError(
            f"imbalance must be finite and >= 1 (largest / smallest share), got {imbalance}"
        )
    return imbalance


def _long_tail(n: int, imbalance: float) -> np.ndarray:
    """Shares ``imbalance ** (-i / (n - 1))`` of ``n`` types, normalised (one type: ``[1]``)."""
    shares = imbalance ** (-np.arange(n) / max(n - 1, 1))
    return shares / shares.sum()


def _split(total: int, shares: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``shares``, exactly, by largest remainders."""
    exact = total * shares
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


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


class CountSampler:
    """Negative-binomial counts (gamma-Poisson) for cells whose mean profile is ``profiles[group]``.

    ``profiles`` rows sum to one. Creating the sampler draws every cell's log-normal library
    size from ``rng`` and spawns one child stream per block of ``CHUNK_CELLS`` cells; block
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
        self._starts = range(0, self.n_cells, CHUNK_CELLS)
        self._streams = rng.spawn(len(self._starts))
        self._group = group
        self._profiles = profiles.astype(np.float32)
        self._gamma_shape = np.broadcast_to(
            (1.0 / dispersion).astype(np.float32), (CHUNK_CELLS, self.n_genes)
        )
        self._gamma_scale = dispersion.astype(np.float32)

    def block(self, i: int, as_sparse: bool) -> sp.csr_matrix | np.ndarray:
        """Counts of block ``i``: float32 ``(<= CHUNK_CELLS, n_genes)``, CSR or dense."""
        start = self._starts[i]
        cells = slice(start, min(start + CHUNK_CELLS, self.n_cells))
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
    counts: CountSampler


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


def simulate(
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
    proportions: str = "dirichlet",
    imbalance: float = IMBALANCE,
) -> _Simulation:
    """Check the arguments of :func:`synthetic` and draw everything but the counts."""
    n_reference = check_int("n_reference", n_reference, 1)
    n_target = check_int("n_target", n_target, 1)
    n_genes = check_int("n_genes", n_genes, 2)
    n_types = check_int("n_types", n_types, 1)
    n_anomaly_types = check_int("n_anomaly_types", n_anomaly_types, 0)
    n_batches = check_int("n_batches", n_batches, 1)
    anomaly_ratio = check_fraction("anomaly_ratio", anomaly_ratio, allow_zero=True)
    batch_effect = check_batch_effect(batch_effect)
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

    imbalance = _check_proportions(proportions, imbalance)
    if proportions == "long_tail":
        shares = _long_tail(n_types, imbalance)
        anomaly_types = (
            n_types
            + np.repeat(
                np.arange(n_anomaly_types),
                _split(n_anomalies, _long_tail(n_anomaly_types, imbalance)),
            )
            if n_anomaly_types
            else np.zeros(0, dtype=np.int64)
        )
    else:
        shares = rng.dirichlet(np.full(n_types, _TYPE_CONCENTRATION))
        anomaly_types = n_types + np.arange(n_anomalies) % max(n_anomaly_types, 1)
    ref_type = rng.choice(n_types, n_reference, p=shares)
    tgt_type = np.concatenate(
        [rng.choice(n_types, n_target - n_anomalies, p=shares), anomaly_types]
    )
    tgt_type = rng.permutation(tgt_type)
    tgt_batch = rng.permutation(np.arange(n_target) % n_batches)
    # profile row of (type t, batch b) is t * n_batches + b; the reference uses batch 0's style.
    # The reference's library sizes and streams are drawn from rng before the target's.
    ref_counts = CountSampler(rng, profiles, ref_type * n_batches, dispersion)
    tgt_counts = CountSampler(rng, profiles, tgt_type * n_batches + tgt_batch, dispersion)
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
        "proportions": proportions,
        "imbalance": imbalance,
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
    proportions: str = "dirichlet",
    imbalance: float = IMBALANCE,
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
    proportions
        ``"dirichlet"``: normal-type proportions drawn from a Dirichlet (concentration 5),
        anomalous cells split evenly over the anomalous types. ``"long_tail"``: type ``i`` of
        ``n`` gets a share proportional to ``imbalance ** (-i / (n - 1))`` (the commonest type
        is ``imbalance`` times the rarest), among the normal types and, separately, among the
        anomalous cells (split exactly, largest remainders).
    imbalance
        Ratio of the largest to the smallest share with ``proportions="long_tail"`` (>= 1).

    Returns
    -------
    reference, target
        AnnData with ``obs`` columns ``cell_type``, ``is_anomaly`` and ``batch``, and
        ``uns["synthetic"]`` holding the parameters, the type names (``types``), their
        log-fold changes (``log_fold_change``, types x genes) and the per-batch log-shifts
        (``batch_shift``, batches x genes).
    """
    sim = simulate(
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
        proportions=proportions,
        imbalance=imbalance,
    )
    reference, target = (
        AnnData(X=part.counts.matrix(sparse), **sim.annotations(part))
        for part in (sim.reference, sim.target)
    )
    return reference, target


__all__ = [
    "CHUNK_CELLS",
    "CountSampler",
    "check_batch_effect",
    "check_fraction",
    "check_int",
    "simulate",
    "synthetic",
]
