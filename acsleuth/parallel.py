"""Data-parallel runs on ``torch.distributed``, one process per device, started by ``torchrun``.

``torchrun --nproc_per_node=K -m acsleuth run ...`` starts K processes and sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init` joins them into a process group (NCCL on
GPUs, gloo on CPU). Every helper here takes the :class:`Context` of the run and is a no-op
(it returns its input unchanged) in a single process, so the same code runs both ways.

Collectives must be called by every rank, in the same order, with compatible shapes: a rank
that skips one leaves the others waiting until the process group's timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._process_group import SINGLE, Context, comm_device, context, init, shutdown

# ------------------------------------------------------------------ sharding


def shard_bounds(n: int, ctx: Context) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous block of ``n`` rows.

    Blocks follow rank order and their sizes differ by at most one (the first ``n % world``
    ranks get one more row); a rank may get an empty block when ``n < world_size``.
    """
    if n < 0:
        raise ValueError(f"cannot shard a negative number of rows ({n})")
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return start, start + base + (ctx.rank < extra)


def shard_rows(n: int, ctx: Context) -> np.ndarray:
    """``(n_rank,)`` int64 positions of this rank's rows (see :func:`shard_bounds`).

    Concatenated in rank order, the shards of all ranks are ``np.arange(n)``.
    """
    start, stop = shard_bounds(n, ctx)
    return np.arange(start, stop, dtype=np.int64)


# ------------------------------------------------------------------ model state


def _coalesced(tensors: Iterable[Tensor], collective: Callable[[Tensor], None]) -> None:
    """Run ``collective`` once per (dtype, device) on the flattened tensors and copy back."""
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        collective(flat)
        for t, chunk in zip(group, flat.split([t.numel() for t in group]), strict=True):
            t.detach().copy_(chunk.view_as(t))


def _mean_collective(ctx: Context) -> Callable[[Tensor], None]:
    def reduce(flat: Tensor) -> None:
        dist.all_reduce(flat)
        flat.div_(ctx.world_size)

    return reduce


@torch.no_grad()
def average_gradients(params: Iterable[nn.Parameter], ctx: Context) -> None:
    """Replace each parameter's ``.grad`` by its mean over ranks (one all-reduce per dtype).

    Call it between ``loss.backward()`` and ``optimizer.step()``. When every rank's loss is a
    mean over an equally sized shard of a batch, the result is the gradient of the whole
    batch's mean loss, and the ranks' optimisers stay in step.

    acsleuth averages gradients by hand instead of wrapping modules in
    ``DistributedDataParallel`` because the WGAN-GP gradient penalty differentiates through
    ``torch.autograd.grad(..., create_graph=True)``, which DDP does not support.

    Parameters whose ``.grad`` is None are skipped; which parameters have one must be the
    same on every rank (it is when every rank runs the same model code). Single process: no-op.
    """
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if any(g.is_sparse for g in grads):
        raise ValueError("average_gradients: sparse gradients are not supported; use dense layers")
    _coalesced(grads, _mean_collective(ctx))


@torch.no_grad()
def broadcast_tensors(tensors: Iterable[Tensor], ctx: Context, src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values. Single process: no-op."""
    if not ctx.distributed:
        return
    _coalesced(tensors, lambda flat: dist.broadcast(flat, src))


def broadcast_module(module: nn.Module, ctx: Context, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank (initial sync)."""
    broadcast_tensors([*module.parameters(), *module.buffers()], ctx, src)


@torch.no_grad()
def average_buffers(module: nn.Module, ctx: Context) -> None:
    """Average ``module``'s floating-point buffers over ranks (BatchNorm running statistics).

    Integer buffers (``num_batches_tracked``) are left alone. Single process: no-op.
    """
    if not ctx.distributed:
        return
    _coalesced([b for b in module.buffers() if b.is_floating_point()], _mean_collective(ctx))


# ------------------------------------------------------------------ tensors


def _row_counts(n_rows: int, ctx: Context, device: torch.device) -> list[int]:
    mine = torch.tensor([n_rows], dtype=torch.long, device=device)
    counts = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(counts, mine)
    return torch.cat(counts).tolist()


def _padded(t: Tensor, n_rows: int) -> Tensor:
    if t.shape[0] == n_rows:
        return t
    pad = t.new_zeros((n_rows - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad])


def row_offset(n_rows: int, ctx: Context) -> int:
    """Where this rank's ``n_rows`` start in the rank-order concatenation of every rank's rows
    (what :func:`all_gather_rows` returns). Single process: 0."""
    if not ctx.distributed:
        return 0
    return sum(_row_counts(n_rows, ctx, comm_device(ctx))[: ctx.rank])


def all_gather_rows(t: Tensor, ctx: Context) -> Tensor:
    """Every rank's ``t`` concatenated along rows in rank order; row counts may differ.

    Not differentiable (see :func:`all_gather_autograd`). Trailing dimensions and dtype must
    agree across ranks. Single process: returns ``t``.

    Parameters
    ----------
    t
        ``(n_rank, ...)`` tensor on this rank's communication device.

    Returns
    -------
    ``(sum of n_rank, ...)`` tensor.
    """
    if not ctx.distributed:
        return t
    if t.dim() == 0:
        raise ValueError("all_gather_rows needs a tensor with at least one dimension")
    t = t.detach().contiguous()
    sizes = _row_counts(t.shape[0], ctx, t.device)
    longest = max(sizes)
    if longest == 0:
        return t
    padded = _padded(t, longest)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def _all_gather_equal(t: Tensor, world_size: int) -> Tensor:
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def all_gather_equal(t: Tensor, ctx: Context) -> Tensor:
    """Every rank's ``t`` (all of the same shape), concatenated along rows in rank order."""
    if not ctx.distributed:
        return t
    return _all_gather_equal(t, ctx.world_size)


class _AllGatherRows(torch.autograd.Function):
    """All-gather of equal-sized blocks whose backward all-reduces the gradient."""

    @staticmethod
    def forward(fctx, t: Tensor, rank: int, world_size: int) -> Tensor:  # type: ignore[override]
        fctx.rank, fctx.rows = rank, t.shape[0]
        return _all_gather_equal(t.detach(), world_size)

    @staticmethod
    def backward(fctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.narrow(0, fctx.rank * fctx.rows, fctx.rows), None, None


def all_gather_autograd(t: Tensor, ctx: Context) -> Tensor:
    """Differentiable all-gather: every rank's ``t`` concatenated in rank order.

    Every rank must pass the same shape (pad first otherwise). The gradient reaching a rank's
    ``t`` is the sum over ranks of their losses' gradients with respect to its block, so that
    :func:`average_gradients` afterwards yields the gradient of the mean of the ranks' losses.
    Single process: returns ``t``.

    Parameters
    ----------
    t
        ``(n, ...)`` tensor, the same ``n`` on every rank.

    Returns
    -------
    ``(world_size * n, ...)`` tensor.
    """
    if not ctx.distributed:
        return t
    if t.dim() == 0:
        raise ValueError("all_gather_autograd needs a tensor with at least one dimension")
    return _AllGatherRows.apply(t, ctx.rank, ctx.world_size)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(fctx, t: Tensor) -> Tensor:  # type: ignore[override]
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(fctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(t: Tensor, ctx: Context) -> Tensor:
    """The element-wise sum of ``t`` over ranks; use the returned tensor.

    When ``t`` does not require a gradient it is summed in place and returned. When it does,
    the result is a new tensor whose backward sums the gradients over ranks (the same
    convention as :func:`all_gather_autograd`), so a loss built on global sums, such as the
    gamma_c MMD's group sizes, gets the full-data gradient after :func:`average_gradients`.
    Single process: returns ``t``.
    """
    if not ctx.distributed:
        return t
    if t.requires_grad and torch.is_grad_enabled():
        return _AllReduceSum.apply(t)
    buffer = t if t.is_contiguous() else t.contiguous()
    dist.all_reduce(buffer)
    if buffer is not t:
        t.copy_(buffer)
    return t


def all_reduce_min_int(x: int, ctx: Context) -> int:
    """The smallest of the ranks' ``x`` (to agree on step counts). Single process: ``x``."""
    if not ctx.distributed:
        return int(x)
    value = torch.tensor([int(x)], dtype=torch.long, device=comm_device(ctx))
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


# ------------------------------------------------------------------ outputs

_TENSOR_DTYPES = frozenset(
    np.dtype(t)
    for t in (np.int8, np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64)
)


def gather_to_main(array: np.ndarray, ctx: Context) -> np.ndarray | None:
    """Per-cell outputs of all ranks, concatenated along rows in rank order, on rank 0.

    Parameters
    ----------
    array
        ``(n_rank, ...)`` this rank's rows; trailing dimensions and dtype must agree
        across ranks. Numeric and boolean arrays travel as tensors, others are pickled.

    Returns
    -------
    The ``(sum of n_rank, ...)`` array on rank 0, None on the other ranks. Single process:
    ``array`` itself.
    """
    if not ctx.distributed:
        return array
    array = np.asarray(array)
    if array.ndim == 0:
        raise ValueError("gather_to_main needs an array with at least one dimension")
    if array.dtype != np.bool_ and array.dtype not in _TENSOR_DTYPES:
        parts: list[np.ndarray] | None = [None] * ctx.world_size if ctx.is_main else None  # type: ignore[list-item]
        dist.gather_object(array, parts, dst=0)
        return np.concatenate(parts) if parts is not None else None
    raw = array.view(np.uint8) if array.dtype == np.bool_ else array
    t = torch.from_numpy(np.ascontiguousarray(raw)).to(comm_device(ctx))
    sizes = _row_counts(t.shape[0], ctx, t.device)
    if max(sizes) == 0:
        return array if ctx.is_main else None
    padded = _padded(t, max(sizes))
    buffers = [torch.empty_like(padded) for _ in range(ctx.world_size)] if ctx.is_main else None
    dist.gather(padded, buffers, dst=0)
    if buffers is None:
        return None
    out = torch.cat([b[:n] for b, n in zip(buffers, sizes, strict=True)]).cpu().numpy()
    return out.view(np.bool_) if array.dtype == np.bool_ else out


_END = object()


def lockstep(batches: Iterable[Any], ctx: Context) -> Iterator[Any]:
    """The first batches of every rank, as many as the rank with the fewest has.

    A rank that took a step another rank cannot take would wait forever in the gradient
    all-reduce. When every rank's ``batches`` has a ``len`` the count is agreed once per
    epoch; otherwise the ranks agree before every step on whether all of them have a batch.
    A single process just iterates ``batches``.
    """
    if not ctx.distributed:
        yield from batches
        return
    iterator = iter(batches)
    try:
        n_steps = all_reduce_min_int(len(batches) if isinstance(batches, Sized) else -1, ctx)
        if n_steps >= 0:
            for _ in range(n_steps):
                batch = next(iterator, _END)
                if batch is _END:
                    raise RuntimeError(
                        f"rank {ctx.rank}: the batches ended before the {n_steps} their len() "
                        "promised; the other ranks are now waiting"
                    )
                yield batch
            return
        while True:
            batch = next(iterator, _END)
            if all_reduce_min_int(int(batch is not _END), ctx) == 0:
                return
            yield batch
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # stop a streaming loader's prefetch thread now
            close()


def lockstep_padded(items: Iterable[Any], ctx: Context, empty: Any) -> Iterator[Any]:
    """Every item of this rank's ``items``, then ``empty`` until all ranks have run out.

    For loops with collectives inside (gathering each chunk's output to rank 0) whose ranks
    have unequal numbers of items: every rank takes the same number of steps. One
    agreement per step; a single process just iterates ``items``.
    """
    if not ctx.distributed:
        yield from items
        return
    iterator = iter(items)
    while True:
        item = next(iterator, _END)
        if all_reduce_min_int(int(item is _END), ctx) == 1:
            return
        yield empty if item is _END else item


def broadcast_object(obj: Any, ctx: Context, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (small values: a count, a shape)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=comm_device(ctx))
    return box[0]


def broadcast_array(array: np.ndarray | None, ctx: Context, src: int = 0) -> np.ndarray:
    """Rank ``src``'s numeric ``array`` on every rank (the others may pass None)."""
    if not ctx.distributed:
        return array
    shape, dtype = broadcast_object(
        None if array is None else (array.shape, array.dtype.str), ctx, src
    )
    t = (
        torch.from_numpy(np.ascontiguousarray(array))
        if ctx.rank == src
        else torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype)
    )
    t = t.to(comm_device(ctx))
    dist.broadcast(t, src)
    return t.cpu().numpy()


__all__ = [
    "SINGLE",
    "Context",
    "all_gather_autograd",
    "all_gather_equal",
    "all_gather_rows",
    "all_reduce_min_int",
    "all_reduce_sum",
    "average_buffers",
    "average_gradients",
    "broadcast_array",
    "broadcast_module",
    "broadcast_object",
    "broadcast_tensors",
    "context",
    "gather_to_main",
    "init",
    "lockstep",
    "lockstep_padded",
    "row_offset",
    "shard_bounds",
    "shard_rows",
    "shutdown",
]
