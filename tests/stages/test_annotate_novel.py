"""The open-world annotator's search for novel types it left in empty slots (issue 19)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from acsleuth.data import MinibatchLoader, prepare
from acsleuth.stages.annotate import Predictions
from acsleuth.stages.annotate_novel import fill_empty_slots, fit_novel_search, sample_rows

GENES = 12


def blobs(counts: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells of types 0, 1, ... (``counts`` each): type t expresses genes 3t .. 3t + 2."""
    gen = np.random.default_rng(seed)
    types = np.repeat(np.arange(len(counts)), counts)
    x = gen.gamma(2.0, 0.2, size=(types.size, GENES)).astype(np.float32)
    for t in range(len(counts)):
        x[types == t, 3 * t : 3 * t + 3] += 3.0
    return x, types


def loader(x: np.ndarray) -> MinibatchLoader:
    adata = AnnData(x, obs=pd.DataFrame(index=[f"c{i}" for i in range(len(x))]))
    return MinibatchLoader(prepare(adata, name="cells"), batch_size=32)


def planted() -> tuple:
    """Reference: three types. Target: the same three plus a novel type (type 3, 30 cells) that
    the predictions call seen type 0; slot 3 holds 40 cells, slot 4 is empty."""
    ref_x, codes = blobs([40, 30, 20], seed=0)
    tgt_x, truth = blobs([40, 30, 20, 30], seed=1)
    tgt_x = np.concatenate([tgt_x, blobs([0, 0, 0, 0, 40], seed=2)[0]])  # novel type 4: 40
    truth = np.concatenate([truth, np.full(40, 4)])
    label = np.where(truth == 3, 0, truth)  # type 4 in slot 3, type 3 called seen
    label[truth == 4] = 3
    proba = np.full((len(label), 5), 0.05, dtype=np.float32)
    proba[np.arange(len(label)), label] = 0.8
    ref, tgt = loader(ref_x), loader(tgt_x)
    search = fit_novel_search(ref, tgt, codes, max_cells=1000, seed=0)
    return Predictions(np.zeros((len(label), 2)), proba, label), search, tgt, truth, tgt_x


def test_a_target_only_cluster_called_seen_fills_the_empty_slot_whole() -> None:
    pred, search, tgt, truth, _ = planted()
    out = fill_empty_slots(pred, search, tgt, 3, seed=0)
    np.testing.assert_array_equal(out.label[truth == 3], 4)  # every cell of the missed type
    np.testing.assert_array_equal(out.label[truth != 3], pred.label[truth != 3])  # nothing else
    moved = truth == 3
    np.testing.assert_allclose(out.proba[moved, 4], 0.05 + 0.8 + 0.05 + 0.05, rtol=1e-6)
    np.testing.assert_array_equal(out.proba[moved, :3], 0.0)  # the seen mass went to the slot
    np.testing.assert_array_equal(out.proba[~moved], pred.proba[~moved])
    np.testing.assert_allclose(out.proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(pred.label, np.where(truth == 3, 0, np.minimum(truth, 3)))


def test_without_an_empty_slot_or_an_unexplained_cluster_nothing_moves() -> None:
    pred, search, tgt, truth, tgt_x = planted()
    full = pred.label.copy()
    full[np.flatnonzero(truth == 4)[:15]] = 4  # slot 4 now holds 15 cells: not empty
    kept = Predictions(pred.features, pred.proba, full)
    assert fill_empty_slots(kept, search, tgt, 3, seed=0) is kept
    # the target without the novel types: slot 4 empty, but every cluster is the reference's
    seen_only = truth < 3
    sub = Predictions(pred.features[seen_only], pred.proba[seen_only], pred.label[seen_only])
    out = fill_empty_slots(sub, search, loader(tgt_x[seen_only]), 3, seed=0)
    np.testing.assert_array_equal(out.label, sub.label)


def test_the_reference_sample_keeps_a_cell_of_every_type() -> None:
    codes = np.repeat([0, 1, 2], [500, 400, 1])
    rows = sample_rows(codes, 50, seed=0)
    assert rows.size == 50 and set(codes[rows]) == {0, 1, 2}
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(sample_rows(codes, 5000, seed=0), np.arange(codes.size))
    np.testing.assert_array_equal(rows, sample_rows(codes, 50, seed=0))  # seeded
