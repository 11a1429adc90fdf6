"""Each target batch's per-gene scale against the reference, divided out of the distance to it.

A batch measured unlike the reference often multiplies each gene's normalised expression by
its own factor (zeros stay zeros, so in log space the effect grows with expression): no
shift of principal components undoes it, and its normal cells then lie far from the
reference. Matched to their nearest reference cells, the batch's cells nearest the reference
(mostly normal ones) estimate each gene's factor. Divided out of what the ``"knn"`` distance
measures and of the expression the batch correction starts from, it raised the two-batch
development scenarios from AUROC 0.872 to 0.912 and the F1 of the calls from 0.695 to 0.761,
and the held-out end-to-end F1 x NMI from 0.626 to 0.659 (benchmarks/RESULTS.md, issue 16).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from torch import Tensor

from .._constants import Params
from .._logging import logger, stage_timer
from ..data import ExpressionSource
from .neighbours import OFFSET_SAMPLE, ReferenceNeighbours, nearest, shift_onto
from .residuals import median_sample

SCALE_ROUNDS = 3  # estimate, divide out, estimate again: rounds of batch_gene_scale
SCALE_TRIM = 0.3  # share of a batch's cells nearest the reference that estimate its scale
SCALE_PSEUDO = 0.1  # pseudo-count, in reference mean expressions per batch cell


def batch_gene_scale(
    x: Tensor,
    profile: Tensor,
    mean: Tensor,
    components: Tensor,
    k: int,
    *,
    rounds: int = SCALE_ROUNDS,
    trim: float = SCALE_TRIM,
    pseudo: float = SCALE_PSEUDO,
) -> Tensor:
    """``(G,)`` per-gene log-scale of one batch's log-normalised rows ``x (n, G)`` against the
    reference rows ``profile (m, G)``, matched in the principal axes ``mean``, ``components``.

    Each round shifts the batch (scale divided out so far) onto the reference as
    :func:`~acsleuth.stages.neighbours.shift_onto` does, keeps the ``trim`` share of its cells
    nearest the reference and adds ``log((sum of their expression + e) / (sum of the mean
    expression of their k reference neighbours + e))`` per gene, in ``expm1`` units; ``e`` is
    ``pseudo`` x the reference's mean expression x ``n``, so that rare genes stay near 1.
    Chosen on the development scenarios (pseudo 0.1 against 1, trim 0.3 against 0.5: mean
    AUROC of the distance 0.863 against 0.850-0.859; benchmarks/RESULTS.md, issue 16).
    """
    profile = profile.float()
    reference = torch.expm1(profile)
    keys = (profile - mean) @ components
    expression = torch.expm1(x.float())
    pseudo_count = pseudo * float(reference.mean()) * x.shape[0]
    k = min(k, keys.shape[0])
    scale = x.new_zeros(x.shape[1], dtype=torch.float32)
    for _ in range(rounds):
        scaled = expression * torch.exp(-scale)
        q = (torch.log1p(scaled) - mean) @ components
        offset = shift_onto(q, keys, k)
        distance, index = nearest(q + offset, keys, k)
        closeness = distance.mean(1)
        near = closeness <= torch.quantile(closeness, trim)
        numerator = scaled[near].sum(0) + pseudo_count
        denominator = reference[index[near]].mean(1).sum(0) + pseudo_count
        scale = scale + torch.log(numerator / denominator)
    return scale


def batch_gene_scales(
    neighbours: ReferenceNeighbours, x: Tensor, codes: np.ndarray, n_batches: int, *, seed: int
) -> Tensor:
    """``(n_batches, G)`` log-scales of each batch of rows ``x`` (a sample of every batch,
    batch codes ``codes``) against ``neighbours.profile``; zero for a batch with no row.

    Each batch's scale is :func:`batch_gene_scale` averaged over the folds' principal axes,
    shrunk towards zero by its split-half reliability: the covariance over genes of the
    estimates from two random halves of the batch (``seed``) over the variance of the
    whole batch's estimate, clipped to [0, 1]. With few reference cells one fold's axes
    alone gave estimates that moved the distance's AUROC by up to 0.09 from fold to fold (a
    PBMC development scenario of 223 reference cells: 0.78-0.87), and a batch measured like
    the reference is left nearly as it is (its halves agree little).
    """
    if neighbours.profile is None:
        raise ValueError("batch_gene_scales: the neighbour index keeps no reference profile")
    profile = neighbours.profile.to(x.device)
    rng = np.random.default_rng(seed)

    def over_folds(rows: Tensor) -> Tensor:
        return torch.stack(
            [
                batch_gene_scale(rows, profile, fold.mean, fold.components, neighbours.k)
                for fold in neighbours.folds
            ]
        ).mean(0)

    out = x.new_zeros((n_batches, x.shape[1]), dtype=torch.float32)
    for batch in np.unique(codes).tolist():
        rows = x[torch.from_numpy(codes == batch).to(x.device)]
        scale = over_folds(rows)
        half = torch.from_numpy(rng.permutation(rows.shape[0]) < rows.shape[0] // 2)
        if half.sum() < 2 * neighbours.k or (~half).sum() < 2 * neighbours.k:
            out[batch] = scale  # too few cells to measure the reliability on
            continue
        first, second = over_folds(rows[half.to(x.device)]), over_folds(rows[~half.to(x.device)])
        agreement = ((first - first.mean()) * (second - second.mean())).mean()
        variance = scale.var(unbiased=False).clamp_min(torch.finfo(scale.dtype).tiny)
        out[batch] = scale * float((agreement / variance).clamp(0.0, 1.0))
    return out


@torch.inference_mode()
def target_batch_scale(
    neighbours: ReferenceNeighbours,
    source: ExpressionSource,
    codes: np.ndarray,
    params: Params,
    device: torch.device,
) -> np.ndarray:
    """``(B, G)`` per-gene log-scale of each target batch against the reference
    (:func:`~acsleuth.stages.batch_scale.batch_gene_scales`), from a seeded sample of at most
    ``OFFSET_SAMPLE`` cells per batch."""
    sample = median_sample(codes, cap=OFFSET_SAMPLE, seed=params.random_state)
    x = torch.as_tensor(source.rows(sample), device=device)
    scale = batch_gene_scales(
        neighbours, x, codes[sample], int(codes.max()) + 1, seed=params.random_state
    )
    return scale.cpu().numpy()


def batch_scale_or_none(
    neighbours: ReferenceNeighbours | None,
    source: ExpressionSource,
    codes: np.ndarray,
    params: Params,
    device: torch.device,
    *,
    batch_key: str | None,
    timings: dict[str, float],
) -> np.ndarray | None:
    """:func:`target_batch_scale` when it applies: a ``batch_key``, ``params.batch_scale`` and a
    neighbour index that keeps the reference profile (models saved before it existed keep
    none: logged); else None. Seconds go to ``timings["batch scale"]``."""
    if batch_key is None or not params.batch_scale or neighbours is None:
        return None
    if neighbours.profile is None:
        logger.info("the model keeps no reference profile: no per-gene batch scale")
        return None
    with stage_timer(timings, "batch scale"):
        return target_batch_scale(neighbours, source, codes, params, device)


def counted_rows(
    codes: np.ndarray | None, batch_scale: np.ndarray | None, params: Params
) -> np.ndarray | None:
    """The sorted rows whose distances to the reference, as given, the count without a ratio
    reads when the ``"knn"`` distance is measured on rescaled rows (``batch_scale``): the cells
    that estimate the batch medians (at most ``MEDIAN_SAMPLE`` per batch, seeded), so only the
    rescaled pass touches every cell of a large target. None, every row, without a batch
    scale or when no batch is larger than the sample. Each batch's count is then scaled up
    to its size (:func:`~acsleuth.stages.neighbours.count_anomalies`): scoring 100,000 cells
    in 2 batches took 23.6 s instead of 26.9 s (benchmarks/RESULTS.md, issue 16)."""
    if codes is None or batch_scale is None:
        return None
    rows = median_sample(codes, seed=params.random_state)
    return rows if rows.size < codes.size else None


def batch_names(adata: AnnData, batch_key: str) -> list[str]:
    """The batches of ``adata.obs[batch_key]`` in the order of their codes (its categories)."""
    return [str(b) for b in pd.Categorical(adata.obs[batch_key]).categories]


def scale_table(scale: np.ndarray, batches: Sequence[str], genes: Sequence[str]) -> pd.DataFrame:
    """The ``(B, G)`` log-scales labelled: one row per batch, one column per panel gene."""
    return pd.DataFrame(scale, index=pd.Index(batches, name="batch"), columns=list(genes))


def scale_rows(
    scale: pd.DataFrame | np.ndarray, batches: Sequence[str], genes: Sequence[str]
) -> np.ndarray:
    """``(len(batches), len(genes))`` float32 log-scales: a table's rows looked up by batch name
    and its columns by gene (:func:`scale_table`), an array taken as in that order already.
    A batch or gene the table lacks is refused with one line."""
    if not isinstance(scale, pd.DataFrame):
        return np.asarray(scale, dtype=np.float32)
    for kind, wanted, have in (("batch", batches, scale.index), ("gene", genes, scale.columns)):
        missing = pd.Index(wanted).difference(have.astype(str))
        if len(missing):
            raise ValueError(
                f"batch_scale: the table has no {kind} {list(missing[:3])} of this target "
                f"({len(missing)} missing); pass the batch_scale scored on the same target"
            )
    table = scale.set_axis(scale.index.astype(str), axis=0).set_axis(
        scale.columns.astype(str), axis=1
    )
    return table.loc[list(batches), list(genes)].to_numpy(np.float32)


__all__ = [
    "batch_gene_scale",
    "batch_gene_scales",
    "batch_names",
    "batch_scale_or_none",
    "counted_rows",
    "scale_rows",
    "scale_table",
    "target_batch_scale",
]
