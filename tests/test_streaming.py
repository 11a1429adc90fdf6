"""Streaming: a backed target, residuals spilled to disk and block-shuffled MMD epochs give the
same scores as the whole-array path."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _helpers import FAST

from acsleuth import ACsleuth, datasets
from acsleuth.stages import mmd

STREAMING = {**FAST, "warm_epochs": 2, "eval_batch_size": 48}


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(120, 150, 40, anomaly_ratio=0.2, n_batches=2, seed=4)


@pytest.fixture(scope="module")
def fitted(data):
    return ACsleuth(**STREAMING, random_state=1).fit(data[0])


def _same(a, b) -> None:
    for name in a.scores:
        np.testing.assert_array_equal(a.scores[name], b.scores[name], err_msg=name)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    np.testing.assert_array_equal(a.anomaly, b.anomaly)


@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_disk_cache_and_backed_target_match_the_in_memory_path(
    fitted, data, tmp_path, batch_key
) -> None:
    path = tmp_path / "target.h5ad"
    data[1].write_h5ad(path)
    whole = fitted.evaluate(data[1], batch_key=batch_key)
    streamed = ACsleuth.load(fitted.save(tmp_path / "m"))
    streamed.params["cache_gb"] = 0.0  # residuals in a temporary file, embeddings on the host
    _same(whole, streamed.evaluate(ad.read_h5ad(path, backed="r"), batch_key=batch_key))


def test_several_shuffle_blocks_match_between_memory_and_disk(fitted, data, monkeypatch) -> None:
    one_block = fitted.evaluate(data[1], batch_key="batch")
    monkeypatch.setattr(mmd, "BLOCK_BYTES", 2 * 40 * 64)  # blocks of 64 cells: 3 blocks
    whole = fitted.evaluate(data[1], batch_key="batch")
    fitted.params["cache_gb"] = 0.0
    try:
        _same(whole, fitted.evaluate(data[1], batch_key="batch"))
    finally:
        fitted.params["cache_gb"] = None
    assert not np.array_equal(whole.scores["mmd"], one_block.scores["mmd"])  # blocks were used


def test_cache_gb_is_checked() -> None:
    with pytest.raises(ValueError, match="cache_gb"):
        ACsleuth(cache_gb=-1.0)
