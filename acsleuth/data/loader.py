"""Minibatches of an :class:`ExpressionSource` as float32 tensors on a device."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .matrix import row_chunks
from .source import ExpressionSource

_POLL_S = 0.05
_DONE = object()


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class MinibatchLoader:
    """Iterate over an :class:`ExpressionSource` in minibatches, densifying only minibatches.

    Parameters
    ----------
    source
        The cells to load.
    batch_size
        Cells per batch.
    shuffle
        A fresh permutation every epoch, drawn from the loader's own generator seeded by ``seed``
        (the global RNGs are never touched).
    drop_last
        Drop the last, incomplete batch.
    device
        Where batches are placed.
    resident_bytes
        When the whole dense float32 matrix fits in this many bytes it is built once on ``device``
        and batches are gathered from it; otherwise batches are streamed.
    prefetch
        Streamed batches prepared ahead by a background thread (pinned memory on CUDA).
    rows
        ``(n,)`` integer positions of the cells to iterate over (in this order when not
        shuffled); all cells when None. Batches still yield positions in ``source``.
    """

    def __init__(
        self,
        source: ExpressionSource,
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        resident_bytes: int = 1 << 28,
        prefetch: int = 2,
        rows: np.ndarray | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.source = source
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = _resolve(torch.device(device))
        self.prefetch = int(prefetch)
        self.resident = source.n_obs * source.n_genes * 4 <= resident_bytes
        self.rows = _check_rows(rows, source.n_obs)
        self._rng = np.random.default_rng(seed)
        self._cache: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state: a checkpoint of a training run includes it."""
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.rows.size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(row_indices, x)``: int64 positions and a float32 ``(b, n_genes)`` tensor."""
        order = self._rng.permutation(self.rows) if self.shuffle else self.rows
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]
        if self.resident:
            return self._gather(batches)
        return self._stream(batches)

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Source rows ``rows`` (integer positions; any order, repeats allowed) as a float32
        ``(len(rows), n_genes)`` tensor on ``device``, gathered from the resident matrix if any."""
        if self.resident:
            index = torch.as_tensor(rows, dtype=torch.long).to(self.device)
            return self._resident_matrix().index_select(0, index)
        return torch.from_numpy(self.source.rows(_as_slice(rows))).to(self.device)

    def _gather(self, batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        for rows in batches:
            yield rows, self.take(rows)

    def _resident_matrix(self) -> torch.Tensor:
        if self._cache is None:
            source = self.source
            cache = torch.empty(
                (source.n_obs, source.n_genes), dtype=torch.float32, device=self.device
            )
            for chunk in row_chunks(source.n_obs, source.n_genes):
                cache[chunk].copy_(torch.from_numpy(source.rows(chunk)))
            self._cache = cache
        return self._cache

    def _stream(self, batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(
            target=self._produce, args=(batches, ready, stop), name="acsleuth-prefetch", daemon=True
        )
        worker.start()
        try:
            while (item := ready.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            worker.join()

    def _produce(
        self, batches: list[np.ndarray], ready: queue.Queue, stop: threading.Event
    ) -> None:
        pin = self.device.type == "cuda"
        try:
            for rows in batches:
                if stop.is_set():
                    return
                x = torch.from_numpy(self.source.rows(_as_slice(rows)))
                if pin:
                    x = x.pin_memory()
                _put(ready, (rows, x.to(self.device, non_blocking=True)), stop)
        except BaseException as error:  # handed to the consumer, which re-raises it
            _put(ready, _Failure(error), stop)
        else:
            _put(ready, _DONE, stop)


def _check_rows(rows: np.ndarray | None, n_obs: int) -> np.ndarray:
    """``rows`` as int64 positions in ``[0, n_obs)``; all positions when None."""
    if rows is None:
        return np.arange(n_obs)
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise ValueError(
            f"rows must be a 1-D array of integer positions, got {rows.ndim}-D {rows.dtype}"
        )
    if rows.size and (rows.min() < 0 or rows.max() >= n_obs):
        raise ValueError(f"rows must lie in [0, {n_obs}), got [{rows.min()}, {rows.max()}]")
    return rows.astype(np.int64, copy=False)


def _resolve(device: torch.device) -> torch.device:
    """Pin a bare ``cuda`` to the current device, so the producer thread copies to the same one."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """A contiguous ascending run as a slice (faster to read), anything else unchanged."""
    if rows.size and rows[-1] - rows[0] == rows.size - 1 and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _put(ready: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            ready.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue
