"""A fixed-size table of per-cell rows held in memory when it fits, else in a temporary file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

_NUMPY = {torch.float16: np.float16, torch.float32: np.float32}


class RowStore:
    """``(n_rows, n_cols)`` rows written once in any order, then read back in contiguous runs.

    When ``n_rows * n_cols`` values fit in ``budget_bytes`` the rows live in one tensor on
    ``device``; otherwise in an anonymous temporary file (deleted when the store is closed or
    the process ends), read with ``pread`` into fresh buffers so that host memory does not
    grow with the table (the OS page cache, not the process, holds the file). Both kinds
    return identical values.

    Parameters
    ----------
    n_rows, n_cols
        Shape of the table.
    device
        Where :meth:`read` returns rows (and where an in-memory table lives).
    dtype
        ``torch.float16`` or ``torch.float32``.
    budget_bytes
        Largest in-memory table; 0 always spills to disk.
    directory
        Folder of the temporary file (the system's temporary folder when None).
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float16,
        budget_bytes: int = 1 << 31,
        directory: str | os.PathLike | None = None,
    ) -> None:
        if dtype not in _NUMPY:
            raise ValueError(f"RowStore holds float16 or float32 rows, got {dtype}")
        if n_rows < 0 or n_cols < 1:
            raise ValueError(f"RowStore needs n_rows >= 0 and n_cols >= 1, got {n_rows} x {n_cols}")
        self.shape = (int(n_rows), int(n_cols))
        self.device = torch.device(device)
        self.dtype = dtype
        self._row_bytes = n_cols * torch.finfo(dtype).bits // 8
        self.in_memory = n_rows * self._row_bytes <= budget_bytes
        self._table: Tensor | None = None
        self._file = None
        if self.in_memory:
            self._table = torch.empty(self.shape, dtype=dtype, device=self.device)
        else:
            self._file = tempfile.TemporaryFile(dir=directory, prefix="acsleuth-rows-")
            os.ftruncate(self._file.fileno(), n_rows * self._row_bytes)

    @classmethod
    def of(cls, table: Tensor) -> RowStore:
        """An in-memory store over the 2-D tensor ``table`` (no copy)."""
        if table.ndim != 2:
            raise ValueError(f"RowStore.of takes a 2-D tensor, got {table.ndim}-D")
        store = cls(0, table.shape[1], device=table.device, dtype=table.dtype)
        store.shape, store._table = (table.shape[0], table.shape[1]), table
        return store

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the table (deletes the temporary file)."""
        self._table = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, start: int, rows: Tensor) -> None:
        """Store ``rows (b, n_cols)`` at rows ``start .. start + b``."""
        stop = start + rows.shape[0]
        if (
            rows.ndim != 2
            or rows.shape[1] != self.shape[1]
            or not 0 <= start <= stop <= self.shape[0]
        ):
            raise ValueError(
                f"RowStore.write: rows {tuple(rows.shape)} at {start} do not fit a {self.shape} table"
            )
        if self._table is not None:
            self._table[start:stop].copy_(rows, non_blocking=True)
            return
        block = rows.detach().to("cpu", self.dtype).contiguous().numpy()
        os.pwrite(self._require_file(), block.tobytes(), start * self._row_bytes)

    def read(self, start: int, stop: int) -> Tensor:
        """Rows ``start .. stop`` on ``device`` (a view of the table when in memory)."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise ValueError(f"RowStore.read: rows {start}..{stop} outside [0, {self.shape[0]}]")
        if self._table is not None:
            return self._table[start:stop]
        out = np.empty((stop - start, self.shape[1]), dtype=_NUMPY[self.dtype])
        view, offset = memoryview(out.reshape(-1)).cast("B"), start * self._row_bytes
        while view.nbytes:
            n = os.preadv(self._require_file(), [view], offset)
            if n == 0:
                raise OSError("RowStore: the temporary file ended early (was it truncated?)")
            view, offset = view[n:], offset + n
        return torch.from_numpy(out).to(self.device)

    def take(self, rows: Tensor) -> Tensor:
        """Rows at positions ``rows`` (any order) on ``device``; in-memory tables only."""
        if self._table is None:
            raise RuntimeError(
                "RowStore.take needs an in-memory table; read contiguous runs instead"
            )
        return self._table[rows.to(self.device)]

    def runs(self, size: int) -> Iterator[tuple[int, Tensor]]:
        """``(start, rows)`` over consecutive runs of at most ``size`` rows, in order."""
        for start in range(0, self.shape[0], max(1, size)):
            yield start, self.read(start, min(start + size, self.shape[0]))

    def _require_file(self) -> int:
        if self._file is None:
            raise RuntimeError("RowStore is closed")
        return self._file.fileno()
