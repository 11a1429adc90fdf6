"""ExpressionSource.rows(): the same rows from every storage, in any requested order."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import FORMATS

from acsleuth.data import prepare

INDICES = {
    "slice": slice(10, 30),
    "strided slice": slice(50, 5, -3),
    "empty slice": slice(30, 10),
    "unsorted with repeats": np.array([41, 3, 17, 3, 0, 59, 17]),
    "sorted": np.array([1, 2, 8, 33]),
    "empty": np.array([], dtype=np.int64),
    "mask": np.arange(60) % 4 == 1,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("index", list(INDICES))
def test_every_storage_gives_the_same_rows(make_adata, lognorm, fmt, index):
    rows = prepare(make_adata(lognorm, fmt)).rows(INDICES[index])
    expected = lognorm[INDICES[index]]
    assert rows.dtype == np.float32 and rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_backed_panel_rows_match_in_memory(make_adata, counts, fmt):
    genes = [f"gene{i}" for i in (29, 0, 14)] + ["absent"]
    index = np.array([69, 5, 3, 12, 3])
    with pytest.warns(UserWarning, match="3 of the 4"):
        in_memory = prepare(make_adata(counts, "dense"), genes=genes).rows(index)
    with pytest.warns(UserWarning, match="3 of the 4"):
        stored = prepare(make_adata(counts, fmt), genes=genes).rows(index)
    np.testing.assert_allclose(stored, in_memory, rtol=1e-6)
    assert not in_memory[:, 3].any() and not in_memory[1].any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_cells_without_counts_give_zero_rows(make_adata, counts, fmt):
    rows = prepare(make_adata(counts, fmt)).rows(np.array([5, 5]))
    assert rows.shape == (2, 30) and not rows.any()


def test_rows_are_a_copy(make_adata, lognorm):
    adata = make_adata(lognorm)
    rows = prepare(adata).rows(slice(0, 5))
    rows += 1
    np.testing.assert_array_equal(adata.X, lognorm)


@pytest.mark.parametrize(
    "index", [np.array([0, 60]), np.array([-1]), np.array([0.5]), np.ones(3, bool)]
)
def test_bad_row_index(lognorm, make_adata, index):
    with pytest.raises(IndexError):
        prepare(make_adata(lognorm)).rows(index)
