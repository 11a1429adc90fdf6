"""The MMD anomaly predictor (docs/method.md §1.1): a classifier of residuals trained to maximise gamma_c MMD."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import parallel
from .._constants import BETAS, LEARNING_RATE, Gamma, Kernel, Precision
from .._logging import progress, stage_timer
from .._precision import autocast
from ..nn import Predictor
from ..ops import gamma_mmd_loss
from ..train.optim import adam
from .residuals import ScaledResiduals

MIN_BATCH = 4  # two cells per group
BLOCK_BYTES = 1 << 28  # stored residuals read per shuffle block


@dataclass(frozen=True)
class ScorerConfig:
    """How the predictor is trained.

    ``batch_size=None`` takes one full pass over the target per epoch (one step, as the
    paper); an integer trains on shuffled minibatches of that size. ``warm_epochs`` first
    fits the predictor to pseudo-labels from a ranking (its top ``ratio``, or its top half
    when the ratio is unknown) before the ``epochs`` of MMD training. Reference residuals
    passed as ``anchors`` join every minibatch as known normal cells (``p = 0``), which
    breaks the symmetry between the two groups of the MMD objective. ``precision="bf16"``
    runs the predictor's forward passes under bf16 autocast (its losses stay float32).

    ``epoch_cells`` caps an epoch (warm start and MMD) at ``ceil(epoch_cells / batch_size)``
    minibatches, drawn as :func:`blocked_minibatches` orders them: on larger targets the
    predictor otherwise takes proportionally more steps and drifts from its warm start (a
    synthetic target of 20,000 cells, 5 MMD epochs: AUROC 0.504 uncapped, 0.998 capped, the
    reference distance 0.999; benchmarks/RESULTS.md, "MMD predictor at scale"). Targets of
    at most ``epoch_cells`` cells, every one the defaults were chosen on, are unaffected.
    """

    epochs: int = 20
    kernel: Kernel = "linear"
    gamma: Gamma = "interp"
    batch_size: int | None = None
    warm_epochs: int = 0
    lr: float = LEARNING_RATE
    betas: tuple[float, float] = BETAS
    precision: Precision = "fp32"
    epoch_cells: int | None = 2048


def pseudo_labels(ranking: Tensor, fraction: float) -> Tensor:
    """1.0 for the top ``fraction`` of ``ranking``, 0.0 elsewhere.

    In a distributed run ``ranking`` is this rank's shard and the top is taken over all
    ranks' cells (their shards in rank order).
    """
    ctx = parallel.context()
    everyone = parallel.all_gather_rows(ranking, ctx)
    n_top = min(max(1, round(fraction * everyone.shape[0])), everyone.shape[0])
    labels = torch.zeros_like(everyone, dtype=torch.float32)
    labels[torch.topk(everyone, n_top).indices] = 1.0
    offset = parallel.row_offset(ranking.shape[0], ctx)
    return labels[offset : offset + ranking.shape[0]]


def minibatches(
    n: int, batch_size: int | None, generator: torch.Generator, *, drop_last: bool = False
) -> list[Tensor]:
    """Shuffled row batches of ``batch_size`` (one of all rows when None or when ``n`` is at
    most ``batch_size``); the tail joins no batch when it is too small for two groups of two,
    or always with ``drop_last``."""
    order = torch.randperm(n, generator=generator)
    if batch_size is None or (batch_size >= n and not drop_last):
        return [order]
    tail = n % batch_size
    keep = n - tail if drop_last or tail < MIN_BATCH else n
    return list(order[:keep].split(batch_size)) if keep else []


def block_rows(n_genes: int, batch_size: int | None) -> int:
    """Rows per shuffle block: ``BLOCK_BYTES`` of float16 residuals, at least one batch."""
    return max(batch_size or 1, BLOCK_BYTES // (2 * max(1, n_genes)))


def blocked_minibatches(
    n: int,
    batch_size: int | None,
    block: int,
    generator: torch.Generator,
    *,
    drop_last: bool = False,
) -> Iterator[tuple[int, int, list[Tensor]]]:
    """``(start, stop, batches)``: blocks of consecutive rows in random order, each with the
    :func:`minibatches` of its rows (positions relative to ``start``).

    One block (``n <= block``) is a plain shuffle of all rows. Larger sets are shuffled
    within blocks, so that training reads its rows in long runs (from disk when the
    residuals are spilled) and a whole-array and a streamed store give the same batches.
    """
    starts = list(range(0, n, block))
    if len(starts) > 1:
        starts = [starts[i] for i in torch.randperm(len(starts), generator=generator).tolist()]
    for start in starts:
        stop = min(start + block, n)
        yield start, stop, minibatches(stop - start, batch_size, generator, drop_last=drop_last)


def _anchor_rows(anchors: Tensor | None, size: int, generator: torch.Generator) -> Tensor | None:
    if anchors is None:
        return None
    pick = torch.randint(anchors.shape[0], (min(size, anchors.shape[0]),), generator=generator)
    return anchors[pick.to(anchors.device)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_minibatches(
    n: int, batch_size: int | None, block: int, *, drop_last: bool = False
) -> int:
    """Batches per epoch of :func:`blocked_minibatches`."""
    total = 0
    for start in range(0, n, block):
        size = min(block, n - start)
        if batch_size is None or (batch_size >= size and not drop_last):
            total += 1
        else:
            tail = size % batch_size
            total += size // batch_size + int(not drop_last and tail >= MIN_BATCH)
    return total


def fit_predictor(
    residuals: Tensor | ScaledResiduals,
    *,
    ratio: float | None,
    config: ScorerConfig,
    ranking: Tensor | None = None,
    anchors: Tensor | None = None,
    seed: int = 0,
    verbose: bool = True,
    timings: dict[str, float] | None = None,
    history: dict[str, list[dict[str, float]]] | None = None,
) -> Predictor:
    """Train a :class:`~acsleuth.nn.Predictor` on ``residuals (N, G)`` of every target cell.

    ``residuals`` (a tensor or a possibly disk-backed :class:`ScaledResiduals`) may be
    stored in a lower precision (float16); minibatches are computed in float32. Epochs visit
    the rows block by block (:func:`blocked_minibatches`), so a store larger than memory is
    read sequentially, once per epoch. (Over 80 lines: the warm start and the MMD epochs
    share closures over one shuffled epoch, so both see the same minibatches.)

    Parameters
    ----------
    ratio
        Known anomaly fraction: fixes ``n = ratio * (target cells in the batch)``; ``None``
        uses the soft count ``n = sum p``.
    ranking
        ``(N,)`` scores (higher = more anomalous) giving the warm-start pseudo-labels;
        needed when ``config.warm_epochs > 0``.
    anchors
        ``(A, G)`` residuals of known normal (reference) cells, or ``None``.
    timings
        When given, the seconds of the warm start and of the MMD epochs are added under
        "mmd warm start" (when ``warm_epochs > 0``) and "mmd train" (inside a caller's stage
        keyed by its path, as :func:`~acsleuth._logging.stage_timer` does)
        (each ends with a device sync on CUDA).
    history
        When given, per-epoch mean losses go to ``history["mmd warm start"]`` (``bce``,
        when ``warm_epochs > 0``) and ``history["mmd predictor"]`` (``mmd``, this rank's).
    """
    timings = {} if timings is None else timings
    history = {} if history is None else history
    if isinstance(residuals, Tensor):
        residuals = ScaledResiduals.wrap(residuals)
    n_cells, n_genes = residuals.shape
    if anchors is not None and anchors.shape[1] != n_genes:
        raise ValueError(
            f"fit_predictor: anchors have {anchors.shape[1]} genes but residuals {n_genes}"
        )
    device = residuals.device
    ctx = parallel.context()
    if ctx.distributed and config.batch_size is None:
        raise ValueError("fit_predictor: a distributed run needs an integer batch_size (e.g. 128)")
    predictor = Predictor(n_genes).to(device).train()
    parallel.broadcast_module(predictor, ctx)
    opt = adam(predictor.parameters(), lr=config.lr, betas=config.betas)
    gen = torch.Generator().manual_seed(seed + ctx.rank)
    if config.warm_epochs > 0 and ranking is None:
        raise ValueError("fit_predictor: warm_epochs > 0 needs a ranking")
    targets = None
    if config.warm_epochs > 0:
        targets = pseudo_labels(ranking, ratio if ratio is not None else 0.5).to(device)

    def share(batch_size: int | None) -> int | None:
        """Rows per rank of a minibatch (the global size is kept across world sizes)."""
        return (
            batch_size if batch_size is None else max(MIN_BATCH // 2, batch_size // ctx.world_size)
        )

    def n_steps(batch_size: int | None) -> int:
        """Minibatches per epoch, the same on every rank (the fewest any rank has), at most
        ``ceil(epoch_cells / batch_size)``."""
        size = share(batch_size)
        count = count_minibatches(
            n_cells, size, block_rows(n_genes, size), drop_last=ctx.distributed
        )
        if batch_size is not None and config.epoch_cells is not None:
            count = min(count, max(1, -(-config.epoch_cells // batch_size)))
        return parallel.all_reduce_min_int(count, ctx)

    def epoch(batch_size: int | None) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
        """Per minibatch: its rows, residuals (+ anchors), logits and cross-entropy."""
        batch_size = share(batch_size)
        block = block_rows(n_genes, batch_size)
        batches_of = blocked_minibatches(n_cells, batch_size, block, gen, drop_last=ctx.distributed)
        for start, stop, batches in batches_of:
            raw = residuals.block(start, stop)
            for local in batches:
                local = local.to(device)
                rows = local + start
                delta = residuals.finish(raw[local], rows)
                extra = _anchor_rows(anchors, len(rows), gen)
                if extra is not None:
                    delta = torch.cat([delta, extra])
                with autocast(device, config.precision):
                    logits = predictor(delta).float()
                if targets is None:
                    yield rows, delta, logits, None
                    continue
                labels = torch.cat([targets[rows], targets.new_zeros(delta.shape[0] - len(rows))])
                yield rows, delta, logits, F.binary_cross_entropy_with_logits(logits, labels)

    if config.warm_epochs:
        with stage_timer(timings, "mmd warm start"):
            for _ in progress(range(config.warm_epochs), desc="warm start", verbose=verbose):
                steps, losses = n_steps(config.batch_size or 128), []
                for _, _, _, loss in itertools.islice(epoch(config.batch_size or 128), steps):
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    parallel.average_gradients(predictor.parameters(), ctx)
                    opt.step()
                    losses.append(loss.detach())
                _record(history, "mmd warm start", "bce", losses)
            _sync(device)
    steps = n_steps(config.batch_size)
    total = config.epochs * steps
    step = 0
    with stage_timer(timings, "mmd train"):
        for _ in progress(range(config.epochs), desc="mmd score", verbose=verbose):
            losses = []
            for rows, delta, logits, _ in itertools.islice(epoch(config.batch_size), steps):
                for group in opt.param_groups:  # cosine schedule over all steps
                    group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                p = torch.sigmoid(logits)
                p = torch.cat([p[: len(rows)], p.new_zeros(len(p) - len(rows))])  # anchors: p = 0
                if ctx.distributed:  # the loss of the global minibatch, identical on all ranks
                    delta = parallel.all_gather_rows(delta, ctx)
                    p = parallel.all_gather_autograd(p, ctx)
                n = None if ratio is None else max(ratio * len(rows) * ctx.world_size, 1.5)
                loss = gamma_mmd_loss(delta, p, n=n, kernel=config.kernel, gamma=config.gamma)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                parallel.average_gradients(predictor.parameters(), ctx)
                opt.step()
                step += 1
                losses.append(loss.detach())
            _record(history, "mmd predictor", "mmd", losses)
        _sync(device)
    return predictor.eval()


def _record(
    history: dict[str, list[dict[str, float]]], stage: str, name: str, losses: list[Tensor]
) -> None:
    """Append the mean of an epoch's ``losses`` (one host sync) to ``history[stage]``."""
    if losses:
        history.setdefault(stage, []).append({name: float(torch.stack(losses).float().mean())})


@torch.inference_mode()
def predict_logits(
    predictor: Predictor, residuals: Tensor | ScaledResiduals, chunk: int = 8192
) -> Tensor:
    """Anomaly logits of every row, in chunks (on the residuals' device; float32 whatever the
    training precision: bf16 logits would tie cells in the ranking)."""
    predictor.eval()
    if isinstance(residuals, Tensor):
        residuals = ScaledResiduals.wrap(residuals)
    out = torch.empty(residuals.shape[0], device=residuals.device)  # filled in place (no heap
    for start, rows in residuals.chunks(chunk):  # fragmentation from many kept pieces)
        out[start : start + rows.shape[0]] = predictor(rows)
    return out
