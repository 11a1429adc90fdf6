"""RowStore: the same rows back whether the table lives in memory or in a temporary file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth.data.store import RowStore
from acsleuth.stages.mmd import blocked_minibatches, count_minibatches, minibatches


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_memory_and_disk_tables_return_the_same_rows(dtype: torch.dtype) -> None:
    rows = torch.randn(37, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    with (
        RowStore(37, 5, dtype=dtype) as memory,
        RowStore(37, 5, dtype=dtype, budget_bytes=0) as disk,
    ):
        assert memory.in_memory and not disk.in_memory
        for start in (30, 0, 11):  # written out of order, in uneven pieces
            stop = {30: 37, 0: 11, 11: 30}[start]
            memory.write(start, rows[start:stop])
            disk.write(start, rows[start:stop])
        for store in (memory, disk):
            assert torch.equal(store.read(0, 37), rows)
            assert torch.equal(store.read(5, 5), rows[5:5])
            assert torch.equal(torch.cat([part for _, part in store.runs(8)]), rows)
            assert [start for start, _ in store.runs(8)] == [0, 8, 16, 24, 32]


def test_a_disk_table_does_not_keep_what_it_returns() -> None:
    with RowStore(4, 3, dtype=torch.float32, budget_bytes=0) as store:
        store.write(0, torch.ones(4, 3))
        first = store.read(0, 4)
        first += 1  # a fresh buffer: the stored rows are unchanged
        assert torch.equal(store.read(0, 4), torch.ones(4, 3))


def test_store_misuse_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="float16 or float32"):
        RowStore(2, 2, dtype=torch.int64)
    store = RowStore(4, 3, budget_bytes=0)
    with pytest.raises(ValueError, match="do not fit"):
        store.write(2, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="do not fit"):
        store.write(0, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="outside"):
        store.read(3, 5)
    with pytest.raises(RuntimeError, match="in-memory"):
        store.take(torch.tensor([0]))
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.read(0, 1)


def test_of_wraps_a_tensor_without_copying() -> None:
    table = torch.arange(12.0).reshape(4, 3)
    store = RowStore.of(table)
    assert store.shape == (4, 3) and store.read(1, 3).data_ptr() == table[1:].data_ptr()
    assert torch.equal(store.take(torch.tensor([3, 0])), table[[3, 0]])


@pytest.mark.parametrize(
    ("n", "batch", "block"), [(100, 16, 1000), (1000, 64, 256), (130, 32, 64), (9, None, 4)]
)
def test_blocked_minibatches_visit_every_row_once_in_block_runs(n, batch, block) -> None:
    seen, count = [], 0
    for start, stop, batches in blocked_minibatches(
        n, batch, block, torch.Generator().manual_seed(3)
    ):
        assert 0 <= start < stop <= n and stop - start <= block
        for rows in batches:
            assert rows.max() < stop - start and (len(rows) >= 4 or len(rows) == stop - start)
            seen.append(rows + start)
            count += 1
    seen = torch.cat(seen)
    assert seen.unique().numel() == seen.numel()  # no row twice
    assert n - seen.numel() < 4 * -(-n // block)  # only tails of fewer than 4 rows are left out
    assert count == count_minibatches(n, batch, block)


def test_one_block_is_a_plain_shuffle() -> None:
    ((start, stop, batches),) = blocked_minibatches(100, 16, 100, torch.Generator().manual_seed(5))
    expected = minibatches(100, 16, torch.Generator().manual_seed(5))
    assert (start, stop) == (0, 100)
    assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))
    assert np.isclose(sum(len(b) for b in batches), 100)
