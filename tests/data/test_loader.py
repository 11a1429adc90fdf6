"""MinibatchLoader: epochs, shuffling, drop_last, resident vs streamed, errors, early exit."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from acsleuth.data import MinibatchLoader, prepare


@pytest.fixture
def source(make_adata, lognorm):
    return prepare(make_adata(lognorm, "csr"))


@pytest.mark.parametrize("resident_bytes", [0, 1 << 20])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_once_per_epoch(source, lognorm, resident_bytes, shuffle):
    loader = MinibatchLoader(
        source, batch_size=16, shuffle=shuffle, seed=0, resident_bytes=resident_bytes
    )
    assert loader.resident == bool(resident_bytes)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == 4
        assert [len(rows) for rows, _ in batches] == [16, 16, 16, 12]
        seen = np.concatenate([rows for rows, _ in batches])
        assert np.array_equal(np.sort(seen), np.arange(60))
        assert shuffle != np.array_equal(seen, np.arange(60))
        for rows, x in batches:
            assert rows.dtype == np.int64
            assert x.dtype == torch.float32 and x.device.type == "cpu"
            np.testing.assert_array_equal(x.numpy(), lognorm[rows])


def test_shuffle_is_reproducible_and_fresh_each_epoch(source):
    def orders(seed):
        loader = MinibatchLoader(source, batch_size=7, shuffle=True, seed=seed)
        return [np.concatenate([rows for rows, _ in loader]) for _ in range(3)]

    # The legacy global RNG is what must stay untouched, hence its legacy accessor.
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    torch_state = torch.get_rng_state().clone()
    first, again, other = orders(5), orders(5), orders(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    assert not np.array_equal(first[0], other[0])
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("resident_bytes", [0, 1 << 20])
def test_drop_last(source, resident_bytes):
    loader = MinibatchLoader(source, batch_size=16, drop_last=True, resident_bytes=resident_bytes)
    assert len(loader) == 3
    assert [len(rows) for rows, _ in loader] == [16, 16, 16]
    assert len(MinibatchLoader(source, batch_size=61, drop_last=True)) == 0
    assert len(MinibatchLoader(source, batch_size=61)) == 1


@pytest.mark.parametrize("resident_bytes", [0, 1 << 20])
def test_a_subset_of_rows_and_take(source, lognorm, resident_bytes):
    subset = np.array([9, 2, 40, 7, 33])
    loader = MinibatchLoader(source, batch_size=2, rows=subset, resident_bytes=resident_bytes)
    assert len(loader) == 3
    batches = list(loader)
    np.testing.assert_array_equal(np.concatenate([rows for rows, _ in batches]), subset)
    for rows, x in batches:
        np.testing.assert_array_equal(x.numpy(), lognorm[rows])
    shuffled = MinibatchLoader(source, batch_size=2, rows=subset, shuffle=True, seed=0)
    assert sorted(np.concatenate([rows for rows, _ in shuffled]).tolist()) == sorted(
        subset.tolist()
    )
    picks = np.array([5, 5, 0, 59, 3])  # any order, repeats allowed
    np.testing.assert_array_equal(loader.take(picks).numpy(), lognorm[picks])


@pytest.mark.parametrize(
    "rows", [np.array([0, 60]), np.array([-1]), np.zeros((2, 2), int), np.array([0.5])]
)
def test_bad_rows(source, rows):
    with pytest.raises(ValueError, match="rows must"):
        MinibatchLoader(source, rows=rows)


@pytest.mark.parametrize("fmt", ["dense", "csc", "backed-dense", "backed-csr"])
def test_resident_and_streamed_batches_agree(make_adata, counts, fmt):
    source = prepare(make_adata(counts, fmt)).with_genes(["gene4", "gene0", "gene29"])
    resident = MinibatchLoader(source, batch_size=9, shuffle=True, seed=3)
    streamed = MinibatchLoader(source, batch_size=9, shuffle=True, seed=3, resident_bytes=0)
    assert resident.resident and not streamed.resident
    for _ in range(2):
        for (rows_a, x_a), (rows_b, x_b) in zip(resident, streamed, strict=True):
            np.testing.assert_array_equal(rows_a, rows_b)
            assert torch.equal(x_a, x_b)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "acsleuth-prefetch"]


def _wait_for_no_prefetch_thread(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _prefetch_threads()


def test_errors_in_rows_reach_the_consumer(source, monkeypatch):
    calls = []
    rows = source.rows

    def failing(index):
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return rows(index)

    monkeypatch.setattr(source, "rows", failing)
    seen = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        for batch_rows, _ in MinibatchLoader(source, batch_size=8, resident_bytes=0):
            seen.append(batch_rows)
    assert len(seen) == 2
    assert _wait_for_no_prefetch_thread()


def test_breaking_early_stops_the_producer(source):
    loader = MinibatchLoader(source, batch_size=1, resident_bytes=0, prefetch=1)
    start = time.monotonic()
    for _ in range(3):
        for _ in loader:
            break
    assert time.monotonic() - start < 5
    assert _wait_for_no_prefetch_thread()


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"prefetch": 0}])
def test_bad_arguments(source, kwargs):
    with pytest.raises(ValueError, match="must be at least 1"):
        MinibatchLoader(source, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("resident_bytes", [0, 1 << 20])
def test_cuda_batches(source, lognorm, resident_bytes):
    loader = MinibatchLoader(
        source, batch_size=16, shuffle=True, seed=1, device="cuda", resident_bytes=resident_bytes
    )
    for rows, x in loader:
        assert x.device.type == "cuda"
        np.testing.assert_array_equal(x.cpu().numpy(), lognorm[rows])
