"""Distance to the reference in its principal components, and a count of anomalies without a ratio.

A target cell of a type the reference lacks lies far from every reference cell; its mean
Euclidean distance to its ``k`` nearest reference cells, in the reference's principal
components, ranks several unseen types at once, where the MMD predictor, which learns one
direction, ranks a mixture of types worse (benchmarks/RESULTS.md, issue 16). Distances of
reference cells scored as new cells form a null distribution, from which
:func:`count_anomalies` estimates how many target cells are anomalous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.stats import rankdata
from torch import Tensor

from .._constants import COUNT_QUANTILES, LIFT_QUANTILES, N_NEIGHBOURS, N_REFERENCE_PCS, Params
from .._logging import logger, stage_timer
from ..data import ExpressionSource
from ..ops import kin_topk

OFFSET_SAMPLE = 2000  # cells per target batch from which its shift onto the reference is estimated
LIFT_MIN_CELLS = 50  # the fewest cells of a batch whose null is lifted (count_anomalies)
LIFT_AFTER = 1.0  # null IQRs a batch must be moved by before its null is lifted (count_anomalies)
FOLD_TENSORS = ("mean", "components", "keys", "null", "shifted_null")  # as saved, in order
PROFILE_DTYPE = torch.float16  # the kept reference rows: log-normalised, ~1e-3 relative error


@dataclass(frozen=True)
class NeighbourConfig:
    """How the reference index is built and searched.

    ``n_folds`` folds, or one fold leaving ``max_calibration`` cells out of a large reference
    (:func:`fit_neighbours`); a PCA is fitted on at most ``pca_cells`` cells (a random sample),
    at most ``fold_pca_cells`` when there are several folds.

    ``fold_pca_cells``: the ten PCAs of a reference of 2,000 cells x 2,000 genes took 10.2 of
    its 18.9 s fit; on 1,000 cells they took a quarter of the time and the distance's AUROC
    did not drop (three synthetic sets of 2,000-3,000 reference cells: 0.996 / 0.991 / 0.991
    on every pool cell, 1.000 / 1.000 / 0.997 on 1,000; benchmarks/RESULTS.md, issue 21).
    The references of the issue-16 evaluation (at most 600 cells) are below it.

    ``profile_cells``: reference cells kept, as expression, to estimate each target batch's
    per-gene scale from (:mod:`acsleuth.stages.batch_scale`).
    """

    n_components: int = N_REFERENCE_PCS
    k: int = N_NEIGHBOURS
    n_folds: int = 10
    max_calibration: int = 2000
    pca_cells: int = 20_000
    fold_pca_cells: int = 1_000
    profile_cells: int = 2_000
    chunk: int = 8192


@dataclass
class NeighbourFold:
    """One PCA and its index: the reference cells it was fitted on, and the null distances
    of the cells it left out.

    Attributes
    ----------
    mean
        ``(G,)`` per-gene mean of the PCA's cells.
    components
        ``(G, d)`` orthonormal principal axes.
    keys
        ``(N_pool, d)`` coordinates of the index cells (every reference cell not left out).
    null
        ``(N_left_out,)`` sorted distances of the left-out reference cells to the index.
    shifted_null
        The same after shifting the left-out cells onto the index as a target batch is
        (:func:`shift_onto`): the null of distances measured after a shift. None in a model
        saved before it existed.
    """

    mean: Tensor
    components: Tensor
    keys: Tensor
    null: Tensor
    shifted_null: Tensor | None = None

    def project(self, x: Tensor) -> Tensor:
        """``(n, d)`` coordinates of rows ``x (n, G)`` in this fold's principal axes."""
        return (x.float() - self.mean) @ self.components

    def distances(
        self, x: Tensor, k: int, chunk: int = 8192, offset: Tensor | None = None
    ) -> Tensor:
        """``(n,)`` mean distance of every row of ``x (n, G)`` to its ``k`` nearest index cells,
        after adding ``offset`` (``(d,)`` or ``(n, d)``, see :meth:`batch_offset`) to its
        coordinates."""
        q = self.project(x)
        return knn_distance(q if offset is None else q + offset, self.keys, k, chunk=chunk)

    def batch_offset(self, x: Tensor, k: int, *, iterations: int = 5, trim: float = 0.5) -> Tensor:
        """``(d,)`` shift that moves the rows ``x`` of one target batch onto the reference.

        A batch measured unlike the reference moves all its cells, normal ones included, by
        about the same amount; each cell's offset to the mean of its ``k`` nearest index cells
        estimates that shift. The mean offset of the ``trim`` share of cells nearest the index
        (anomalies, far from it, are left out), repeated ``iterations`` times from the shifted
        rows, is the estimate (each round closes about half the remaining gap: 5 rounds left
        13 % of a planted shift, 3 rounds 19 %). On two-batch development scenarios it raised
        the AUROC of the distance from 0.88-0.92 to 0.99 (synthetic data, effect sd 1) and from
        0.67-0.77 to 0.68-0.83 (PBMC T-cell states, sd 1.5), and left weaker effects level
        (benchmarks/RESULTS.md, issue 16).
        """
        return shift_onto(self.project(x), self.keys, k, iterations=iterations, trim=trim)


def shift_onto(
    q: Tensor, keys: Tensor, k: int, *, iterations: int = 5, trim: float = 0.5
) -> Tensor:
    """``(d,)`` shift of the coordinates ``q (n, d)`` onto ``keys`` (see
    :meth:`NeighbourFold.batch_offset`)."""
    offset = q.new_zeros(q.shape[1])
    for _ in range(iterations):
        distance, index = nearest(q + offset, keys, k)
        near = distance.mean(1) <= torch.quantile(distance.mean(1), trim)
        offset = offset + (keys[index[near]].mean(1) - (q[near] + offset)).mean(0)
    return offset


@dataclass
class ReferenceNeighbours:
    """The fitted folds (:func:`fit_neighbours`), the number of neighbours averaged and
    ``profile``, the ``(m, G)`` log-normalised rows of up to ``profile_cells`` reference cells
    (None in a model saved before it existed: no batch is rescaled then)."""

    folds: list[NeighbourFold]
    k: int
    profile: Tensor | None = None

    def distances(self, x: Tensor, chunk: int = 8192, offsets: Tensor | None = None) -> Tensor:
        """``(F, n)`` distances of rows ``x (n, G)`` in each of the ``F`` folds, each fold's
        coordinates shifted by ``offsets[f]`` (``(F, n, d)``, from :meth:`batch_offsets`) when
        given."""
        return torch.stack(
            [
                fold.distances(x, self.k, chunk, None if offsets is None else offsets[f])
                for f, fold in enumerate(self.folds)
            ]
        )

    def batch_offsets(self, x: Tensor, codes: np.ndarray, n_batches: int) -> Tensor:
        """``(F, n_batches, d)`` per-fold shifts of each target batch onto the reference
        (:meth:`NeighbourFold.batch_offset`), from rows ``x`` (a sample of every batch) whose
        batch codes are ``codes``; zero for a batch with no row."""
        d = self.folds[0].components.shape[1]
        out = x.new_zeros((len(self.folds), n_batches, d), dtype=torch.float32)
        for batch in np.unique(codes).tolist():
            rows = x[torch.from_numpy(codes == batch).to(x.device)]
            for f, fold in enumerate(self.folds):
                out[f, batch] = fold.batch_offset(rows, min(self.k, len(fold.keys)))
        return out

    def state_dict(self) -> dict[str, Tensor]:
        state = {"k": torch.tensor(self.k), "n_folds": torch.tensor(len(self.folds))}
        for i, fold in enumerate(self.folds):
            for name in FOLD_TENSORS:
                if getattr(fold, name) is not None:
                    state[f"{i}.{name}"] = getattr(fold, name)
        if self.profile is not None:
            state["profile"] = self.profile
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ReferenceNeighbours:
        folds = [
            NeighbourFold(*(state.get(f"{i}.{name}") for name in FOLD_TENSORS))
            for i in range(int(state["n_folds"]))
        ]
        return cls(folds, int(state["k"]), state.get("profile"))


def _augment(q: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``[q, 1]`` and ``[y, -|y|^2 / 2]``: their dot product ``q.y - |y|^2 / 2`` is
    largest for the nearest ``y``, and ``|q - y|^2 = |q|^2 - 2 (q.y - |y|^2 / 2)``."""
    return (
        torch.cat([q, q.new_ones(q.shape[0], 1)], dim=1),
        torch.cat([keys, -0.5 * keys.pow(2).sum(1, keepdim=True)], dim=1),
    )


def knn_distance(query: Tensor, keys: Tensor, k: int, *, chunk: int = 8192) -> Tensor:
    """``(n,)`` mean Euclidean distance of each query row to its ``k`` nearest ``keys`` rows
    (:func:`nearest`)."""
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(
            f"knn_distance: k = {k} neighbours but {keys.shape[0]} reference cells; lower k "
            "or give more reference cells"
        )
    return nearest(query, keys, k, chunk=chunk)[0].mean(1)


def nearest(query: Tensor, keys: Tensor, k: int, *, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """``(n, k)`` Euclidean distances of each query row to its ``k`` nearest ``keys`` rows and
    their ``(n, k)`` row indices, nearest first.

    Streams :func:`~acsleuth.ops.kin_topk` (``metric="dot"``) over augmented rows, so
    memory is O(chunk x tile).
    """
    keys = keys.float()
    distance = torch.empty((query.shape[0], k), device=query.device)
    index = torch.empty((query.shape[0], k), dtype=torch.long, device=query.device)
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk].float()
        q_aug, keys_aug = _augment(q, keys)
        values, found = kin_topk(q_aug, keys_aug, k=k, metric="dot")
        squared = q.pow(2).sum(1, keepdim=True) - 2.0 * values
        distance[start : start + q.shape[0]] = squared.clamp_min(0.0).sqrt()
        index[start : start + q.shape[0]] = found
    return distance, index


def principal_axes(x: Tensor, n_components: int) -> tuple[Tensor, Tensor]:
    """Mean ``(G,)`` and top ``(G, d)`` principal axes of rows ``x`` (exact, in float64).

    The top eigenvectors of the Gram matrix of the smaller side (cells or genes): the axes of
    an SVD up to their signs, which no distance sees, in a quarter of its time
    (benchmarks/RESULTS.md, issue 21).
    """
    mean = x.double().mean(0)
    centred = x.double() - mean
    by_cells = centred.shape[0] <= centred.shape[1]
    gram = centred @ centred.T if by_cells else centred.T @ centred
    axes = _top_eigenvectors(gram, n_components)
    if by_cells:
        axes = centred.T @ axes
        axes = axes / axes.norm(dim=0).clamp_min(torch.finfo(axes.dtype).tiny)
    return mean.float(), axes.float().contiguous()


def _top_eigenvectors(gram: Tensor, n: int) -> Tensor:
    """The eigenvectors of the ``n`` largest eigenvalues of a symmetric matrix, largest first.

    On CPU, LAPACK computes only those ``n`` (scipy's ``subset_by_index``): the same vectors
    to 1e-15 as a full ``eigh``, in half its time on a 1,000 x 1,000 Gram matrix.
    """
    if gram.device.type != "cpu":
        return torch.linalg.eigh(gram).eigenvectors[:, -n:].flip(1)
    size = gram.shape[0]
    _, vectors = scipy.linalg.eigh(gram.numpy(), subset_by_index=[size - n, size - 1])
    return torch.from_numpy(np.ascontiguousarray(vectors[:, ::-1]))


class _Reference:
    """Reference rows read as tensors on ``device``, fitted and projected chunk by chunk."""

    def __init__(
        self,
        read: Callable[[np.ndarray], np.ndarray],
        n_cells: int,
        device: torch.device,
        chunk: int,
    ) -> None:
        self.read, self.n_cells, self.device, self.chunk = read, n_cells, device, chunk

    def pca(self, positions: np.ndarray, n_components: int) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(self.read(positions), device=self.device)
        return principal_axes(x, min(n_components, len(positions) - 1, x.shape[1]))

    def project_all(self, mean: Tensor, components: Tensor) -> Tensor:
        cells = np.arange(self.n_cells)
        chunks = (
            torch.as_tensor(self.read(cells[i : i + self.chunk]), device=self.device)
            for i in range(0, self.n_cells, self.chunk)
        )
        return torch.cat([(x - mean) @ components for x in chunks])


def min_reference_cells(config: NeighbourConfig) -> int:
    """The fewest reference cells :func:`fit_neighbours` accepts: every fold keeps ``k`` cells."""
    folds = max(config.n_folds, 2)
    return max(config.n_folds, -(-(config.k + 1) * folds // (folds - 1)))


def fit_neighbours(
    read: Callable[[np.ndarray], np.ndarray],
    n_cells: int,
    config: NeighbourConfig,
    *,
    seed: int,
    device: torch.device | str = "cpu",
) -> ReferenceNeighbours:
    """Fit the folds: each leaves some reference cells out of its PCA and index and keeps
    their distances as its null.

    A reference cell scored by a PCA fitted on itself lies farther from its neighbours than
    a new cell (its own noise spans the axes; measured median 12.6 against 9.9), and cells
    left out of a PCA lie nearer one another than to its cells; so a fold's null is exactly
    what a new normal cell scores in that fold. A reference of at least ``10 x
    max_calibration`` cells gets one fold leaving ``max_calibration`` cells out, a smaller one
    ``n_folds`` folds that together leave every cell out once.

    Parameters
    ----------
    read
        ``read(positions) -> (len(positions), G)`` float32 log-normalised reference rows.
    n_cells
        Number of reference cells.
    config
        Sizes and ``k``.
    seed
        Seed of the folds and of the PCA samples.
    device
        Where the index lives and is searched.
    """
    least = min_reference_cells(config)
    if n_cells < least:
        raise ValueError(
            f"reference: {n_cells} cells; the neighbour score needs at least {least} (k = "
            f"{config.k} neighbours besides the cells each of {config.n_folds} folds leaves out)"
        )
    n_folds = 1 if n_cells >= 10 * config.max_calibration else config.n_folds
    ref = _Reference(read, n_cells, torch.device(device), config.chunk)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_cells)
    if n_folds == 1:
        left_out = [order[: config.max_calibration]]
    else:
        left_out = np.array_split(order, n_folds)
    pca_cells = config.pca_cells if n_folds == 1 else min(config.pca_cells, config.fold_pca_cells)
    folds = []
    for out in left_out:
        out, pool = np.sort(out), np.setdiff1d(order, out)
        fit = (
            pool if pool.size <= pca_cells else np.sort(rng.choice(pool, pca_cells, replace=False))
        )
        mean, components = ref.pca(fit, config.n_components)
        keys = ref.project_all(mean, components)
        held, index = keys[out], keys[pool].clone()
        null = knn_distance(held, index, config.k, chunk=config.chunk)
        shift = shift_onto(held, index, config.k)
        shifted = knn_distance(held + shift, index, config.k, chunk=config.chunk)
        folds.append(
            NeighbourFold(mean, components, index, null.sort().values, shifted.sort().values)
        )
    kept = order[: config.profile_cells]
    profile = torch.as_tensor(read(np.sort(kept)), device=ref.device).to(PROFILE_DTYPE)
    return ReferenceNeighbours(folds, config.k, profile)


def count_anomalies(
    distances: Tensor,
    neighbours: ReferenceNeighbours,
    *,
    quantiles: Sequence[float] = COUNT_QUANTILES,
    shifted: bool = False,
    batches: np.ndarray | None = None,
    offsets: Tensor | None = None,
    batch_sizes: np.ndarray | None = None,
) -> int:
    """Estimated number of anomalies among target cells from their ``(F, n)`` fold distances.

    In each fold a normal target cell falls at or below the null's quantile ``q`` with
    probability ``q``; anomalies (far from the reference) rarely do. So the normal cells number
    about ``#(distances <= q-quantile) / q`` (Storey's estimate of the null proportion, capped
    at all cells). Anomalies near the reference fall below a quantile too, more of them the
    higher ``q``, while a low ``q`` rests on few cells; the estimate is averaged over folds and
    over ``quantiles``. Chosen on the development scenarios with the distance's ranking
    (benchmarks/RESULTS.md, issue 16): the mean over 0.30-0.60 put the F1 of the calls within
    0.041 of the F1 at the true ratio in every family (mean gap 0.037, median |log(called /
    true)| 0.10), where 0.6 alone left gaps up to 0.063 (0.043, 0.12) and counted two
    near-reference T-cell states 0.6x; the largest count over 0.3-0.6 narrowed the mean gap
    (0.033) by over-calling 1.4-1.6x on batch and synthetic scenarios.

    ``shifted``: the distances were measured after shifting each batch (codes ``batches``)
    onto the reference by ``offsets`` (``(F, B, d)``); the fold's ``shifted_null`` is used
    then. A fitted shift moves normal cells nearer than the plain null expects: on two-batch
    development scenarios 0.73-0.75 of the normal cells of synthetic data fell below its 0.6
    quantile (0.62-0.65 below the shifted null's), so the count was 0.35-0.5 of the truth.
    Each batch is then counted on its own, and the null of a batch that was moved far
    is lifted (:func:`null_lift`).

    ``batch_sizes`` (cells per batch code): the distances are of a sample of each batch, and
    each batch's estimate is scaled up to its size; the count is then of all those cells.
    """
    if not quantiles or not all(0.0 < q < 1.0 for q in quantiles):
        raise ValueError(f"count_anomalies: quantiles must be in (0, 1), got {tuple(quantiles)}")
    n = distances.shape[1]
    q = torch.tensor(quantiles, dtype=torch.float64)
    nulls = [
        (fold.shifted_null if shifted and fold.shifted_null is not None else fold.null).double()
        for fold in neighbours.folds
    ]
    batches = np.zeros(n, dtype=np.int64) if batches is None else np.asarray(batches)
    spread = torch.stack([_iqr(null) for null in nulls])
    thresholds = torch.stack([torch.quantile(null, q) for null in nulls])  # (F, quantiles)
    normal = 0.0
    for code in np.unique(batches):
        values = distances[:, torch.from_numpy(batches == code)].double().sort(dim=1).values
        moved = 0.0 if offsets is None else float(offsets[:, code].double().norm(dim=1).mean())
        lift = null_lift(values, nulls, spread) if moved > LIFT_AFTER * spread.mean() else 0.0
        below = torch.stack(
            [
                torch.searchsorted(v, t + lift * iqr, right=True)
                for v, t, iqr in zip(values, thresholds, spread, strict=True)
            ]
        ).double()
        estimate = float(torch.clamp(below / q, max=values.shape[1]).mean())
        normal += (
            estimate if batch_sizes is None else estimate * batch_sizes[code] / values.shape[1]
        )
    return (n if batch_sizes is None else int(np.sum(batch_sizes))) - round(normal)


def null_lift(
    values: Tensor,
    nulls: Sequence[Tensor],
    spreads: Tensor,
    quantiles: Sequence[float] = LIFT_QUANTILES,
) -> float:
    """How far, in interquartile ranges, each null must be raised for one batch's Storey
    estimates of its normal cells to agree over the low ``quantiles``.

    ``values``: the batch's ``(F, n)`` sorted fold distances, ``nulls`` each fold's null,
    ``spreads`` their interquartile ranges.
    The normal cells of a batch with a strong per-gene effect lie farther than any null of
    reference cells after the shift onto the reference (zeros stay zeros, so no shift undoes
    it): the batch's estimates then rise with ``q``, steeply at low ``q``, where anomalies
    are rare, and the plain count over-called 1.4-1.9x at effects of sd 2 (development
    scenarios, benchmarks/RESULTS.md, issue 16). The lift, on a grid of 0 to 3 IQRs by 0.02,
    minimises the spread of the logarithms of the estimates over 0.05-0.40 (the first
    minimum is taken). A batch of fewer than ``LIFT_MIN_CELLS`` cells is not lifted.
    """
    if values.shape[1] < LIFT_MIN_CELLS:
        return 0.0
    q = torch.tensor(quantiles, dtype=torch.float64)
    grid = torch.arange(0, 151, dtype=torch.float64) * 0.02
    below = torch.stack(
        [
            torch.searchsorted(v, torch.quantile(null, q) + grid[:, None] * iqr, right=True)
            for v, null, iqr in zip(values, nulls, spreads, strict=True)
        ]
    ).double()
    estimates = (below / q).mean(0)  # (grid, q), not capped: a lift too high over-counts
    spread = estimates.clamp_min(1.0).log().std(dim=1)
    return float(grid[int(torch.argmin(spread))])


def _iqr(values: Tensor) -> Tensor:
    """Interquartile range of ``values``."""
    low, high = torch.quantile(values, torch.tensor([0.25, 0.75], dtype=values.dtype))
    return high - low


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Mean over ``scores`` of each cell's rank in ``(0, 1]`` (ties share their mean rank)."""
    if not scores:
        raise ValueError("rank_average: no score given")
    return np.mean([rankdata(s) / len(s) for s in scores], axis=0)


def fit_reference_index(
    source: ExpressionSource, params: Params, device: torch.device, timings: dict[str, float]
) -> ReferenceNeighbours | None:
    """The neighbour index of a reference ``source`` (seconds to ``timings["reference
    neighbours"]``), or None, logged, when it has too few cells for one."""
    config = params.neighbour_config()
    if source.n_obs < min_reference_cells(config):
        logger.warning(
            "reference: %d cells are too few for the neighbour index; the MMD predictor starts "
            "from the scaled residual, the 'ensemble' score is the 'mmd' score and calls "
            "without a ratio use a mixture",
            source.n_obs,
        )
        return None
    with stage_timer(timings, "reference neighbours"):
        return fit_neighbours(
            source.rows, source.n_obs, config, seed=params.random_state, device=device
        )
