"""``datasets.write_synthetic``: the simulator's data written chunk by chunk to ``.h5ad`` files."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.abc import CSRDataset

from acsleuth import datasets
from acsleuth.datasets import files, simulator

# more reference cells than one random stream covers (2,048), so blocks and appends straddle
SIZES = (2500, 300, 30)
OPTIONS = {
    "n_types": 3,
    "n_anomaly_types": 2,
    "anomaly_ratio": 0.2,
    "n_batches": 2,
    "batch_effect": 0.7,
    "seed": 3,
}


@pytest.fixture(scope="module")
def expected() -> tuple[ad.AnnData, ad.AnnData]:
    return datasets.synthetic(*SIZES, **OPTIONS)


def _write(folder: Path, **kwargs) -> tuple[Path, Path]:
    arguments = {**OPTIONS, "verbose": False, **kwargs}
    return datasets.write_synthetic(
        folder / "reference.h5ad", folder / "target.h5ad", *SIZES, **arguments
    )


def _assert_same_csr(actual: sp.csr_matrix, expected: sp.csr_matrix) -> None:
    assert sp.isspmatrix_csr(actual) and actual.dtype == np.float32
    assert actual.shape == expected.shape
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)


@pytest.mark.parametrize("chunk_cells", [1000, 2048, 100_000])
def test_files_read_back_equal_to_synthetic(tmp_path, expected, chunk_cells):
    paths = _write(tmp_path, chunk_cells=chunk_cells)
    assert paths == (tmp_path / "reference.h5ad", tmp_path / "target.h5ad")
    for path, memory in zip(paths, expected, strict=True):
        read = ad.read_h5ad(path)
        _assert_same_csr(read.X, memory.X)
        pd.testing.assert_frame_equal(read.obs, memory.obs)
        pd.testing.assert_index_equal(read.var_names, memory.var_names)
        assert read.uns["synthetic"].keys() == memory.uns["synthetic"].keys()
        for key, value in memory.uns["synthetic"].items():
            np.testing.assert_array_equal(read.uns["synthetic"][key], value, err_msg=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.h5ad", "target.h5ad"]


def test_files_equal_synthetic_written_by_anndata(tmp_path, expected):
    """What anndata reads from our files is what it reads from ``synthetic()``'s own h5ad."""
    written = _write(tmp_path / "streamed")
    for path, memory in zip(written, expected, strict=True):
        memory.write_h5ad(tmp_path / "memory.h5ad")
        ours, theirs = ad.read_h5ad(path), ad.read_h5ad(tmp_path / "memory.h5ad")
        _assert_same_csr(ours.X, theirs.X)
        pd.testing.assert_frame_equal(ours.obs, theirs.obs)
        pd.testing.assert_frame_equal(ours.var, theirs.var)
        np.testing.assert_equal(ours.uns, theirs.uns)


def test_backed_reading(tmp_path, expected):
    _, target_path = _write(tmp_path, chunk_cells=128)
    backed = ad.read_h5ad(target_path, backed="r")
    try:
        assert backed.isbacked and isinstance(backed.X, CSRDataset)
        assert backed.shape == expected[1].shape
        pd.testing.assert_frame_equal(backed.obs, expected[1].obs)
        rows = slice(100, 260)  # across a 128-cell append
        _assert_same_csr(backed.X[rows], expected[1].X[rows])
        assert backed.X.group["data"].chunks is not None  # resizable, chunked datasets
    finally:
        backed.file.close()


def test_output_does_not_depend_on_thread_count(tmp_path, monkeypatch, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    reference_path, _ = _write(tmp_path, chunk_cells=700)
    _assert_same_csr(ad.read_h5ad(reference_path).X, expected[0].X)


def test_tiny_data_one_cell_per_append(tmp_path):
    paths = datasets.write_synthetic(
        tmp_path / "r.h5ad",
        tmp_path / "t.h5ad",
        1,
        3,
        2,
        anomaly_ratio=0.0,
        n_anomaly_types=0,
        chunk_cells=1,
        verbose=False,
    )
    for path, memory in zip(
        paths, datasets.synthetic(1, 3, 2, anomaly_ratio=0.0, n_anomaly_types=0), strict=True
    ):
        _assert_same_csr(ad.read_h5ad(path).X, memory.X)


def test_overwrite_replaces_existing_files(tmp_path, expected):
    for name in ("reference.h5ad", "target.h5ad"):
        (tmp_path / name).write_text("old")
    _write(tmp_path, overwrite=True)
    assert ad.read_h5ad(tmp_path / "target.h5ad").n_obs == expected[1].n_obs


def test_existing_file_is_refused_and_kept(tmp_path):
    (tmp_path / "target.h5ad").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        _write(tmp_path)
    assert (tmp_path / "target.h5ad").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["target.h5ad"]  # no reference, no temp file


def test_failure_while_writing_leaves_existing_files_alone(tmp_path, monkeypatch):
    for name in ("reference.h5ad", "target.h5ad"):
        (tmp_path / name).write_text(f"old {name}")
    calls = []
    original = simulator.CountSampler.block

    def failing(self, i, as_sparse):  # the reference is written; the target fails midway
        calls.append(i)
        if self.n_cells == SIZES[1]:
            raise OSError("disk full")
        return original(self, i, as_sparse)

    monkeypatch.setattr(simulator.CountSampler, "block", failing)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, overwrite=True)
    assert len(calls) > 1
    for name in ("reference.h5ad", "target.h5ad"):
        assert (tmp_path / name).read_text() == f"old {name}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.h5ad", "target.h5ad"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_reference": 0}, ValueError, "n_reference"),
        ({"n_genes": 1}, ValueError, "n_genes"),
        ({"anomaly_ratio": 1.0}, ValueError, "anomaly_ratio"),
        ({"n_anomaly_types": 0}, ValueError, "n_anomaly_types"),
        ({"n_target": 2.5}, TypeError, "integer"),
        ({"chunk_cells": 0}, ValueError, "chunk_cells"),
        ({"chunk_cells": True}, TypeError, "chunk_cells"),
        ({"target_path": "same"}, ValueError, "same file"),
        ({"target_path": 3}, TypeError, "target_path"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, error, message):
    arguments = {
        "reference_path": tmp_path / "same",
        "target_path": tmp_path / "target.h5ad",
        "n_reference": 10,
        "n_target": 10,
        "n_genes": 20,
        "verbose": False,
        **kwargs,
    }
    if arguments["target_path"] == "same":
        arguments["target_path"] = tmp_path / "sub" / ".." / "same"
    with pytest.raises(error, match=message):
        datasets.write_synthetic(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_count_blocks_are_drawn_a_bounded_number_ahead(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    reference = simulator.simulate(
        20 * simulator.CHUNK_CELLS,
        1,
        2,
        n_types=1,
        n_anomaly_types=0,
        anomaly_ratio=0.0,
        n_batches=1,
        batch_effect=0.0,
        sparse=True,
        seed=0,
    ).reference
    drawn = []
    original = simulator.CountSampler.block
    monkeypatch.setattr(
        simulator.CountSampler, "block", lambda self, i, s: drawn.append(i) or original(self, i, s)
    )
    blocks = reference.counts.blocks(as_sparse=True)
    next(blocks)
    blocks.close()
    assert len(drawn) <= 2  # one thread: two blocks in flight at most, not all twenty


def test_rechunk_regroups_rows_exactly():
    rng = np.random.default_rng(0)
    blocks = [sp.random(n, 5, density=0.5, format="csr", random_state=rng) for n in (3, 7, 1, 9)]
    whole = sp.vstack(blocks, format="csr")
    for size in (1, 4, 10, 20, 50):
        chunks = list(files.rechunk(iter(blocks), size))
        assert [c.shape[0] for c in chunks[:-1]] == [size] * (len(chunks) - 1)
        assert 0 < chunks[-1].shape[0] <= size
        assert (sp.vstack(chunks, format="csr") != whole).nnz == 0
