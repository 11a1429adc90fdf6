"""The open-world annotator's seen-type labeller (docs/method.md §8.2, a deliberate deviation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from sklearn.linear_model import LogisticRegression

from acsleuth.data import MinibatchLoader, prepare
from acsleuth.stages.annotate import Predictions
from acsleuth.stages.annotate_seen import fit_seen_labeller, relabel_seen


def test_the_seen_labeller_is_a_standardised_logistic_regression() -> None:
    gen = np.random.default_rng(0)
    codes = np.repeat([0, 1, 2], [30, 20, 10])
    x = gen.gamma(2.0, 0.3, size=(60, 12)).astype(np.float32)
    for t in range(3):
        x[codes == t, 4 * t : 4 * t + 4] += 2.0
    adata = AnnData(x, obs=pd.DataFrame(index=[f"c{i}" for i in range(60)]))
    source = prepare(adata, name="reference")
    cpu = torch.device("cpu")
    labeller = fit_seen_labeller(source, codes, 3, max_cells=1000, seed=0, device=cpu)
    loader = MinibatchLoader(source, batch_size=16, device=cpu)
    proba = labeller.proba(loader)
    z = source.rows(slice(None))
    z = (z - z.mean(0)) / (z.std(0) + 1e-3)
    slow = LogisticRegression(max_iter=2000).fit(z, codes).predict_proba(z)
    np.testing.assert_allclose(proba, slow, atol=1e-4)  # streamed in batches, in order
    assert (proba.argmax(1) == codes).all()
    two = fit_seen_labeller(source, np.minimum(codes, 1), 2, max_cells=1000, seed=0, device=cpu)
    binary = LogisticRegression(max_iter=2000).fit(z, np.minimum(codes, 1)).predict_proba(z)
    np.testing.assert_allclose(two.proba(loader), binary, atol=1e-4)  # sklearn's one-row case
    sampled = fit_seen_labeller(source, codes, 3, max_cells=8, seed=0, device=cpu)
    assert (sampled.weight.abs().sum(1) > 0).all()  # a sample keeps a cell of every type


def test_relabelling_names_seen_called_cells_and_keeps_novel_ones() -> None:
    proba = np.array([[0.5, 0.2, 0.3], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]], dtype=np.float32)
    pred = Predictions(np.zeros((3, 2)), proba, proba.argmax(1))  # 2 seen types, 1 novel slot
    seen = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4]], dtype=np.float32)
    out = relabel_seen(pred, seen)
    np.testing.assert_array_equal(out.label, [1, 2, 0])  # the novel-called cell keeps slot 2
    np.testing.assert_allclose(out.proba[0], [0.07, 0.63, 0.3], rtol=1e-6)  # 0.7 x (0.1, 0.9)
    np.testing.assert_allclose(out.proba[1], proba[1])
    np.testing.assert_allclose(out.proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(pred.label, [0, 2, 1])  # the input is not modified


def test_the_labeller_overrides_only_where_it_is_confident() -> None:
    proba = np.array([[0.5, 0.2, 0.3], [0.45, 0.3, 0.25]], dtype=np.float32)
    pred = Predictions(np.zeros((2, 2)), proba, proba.argmax(1))  # both called seen type 0
    seen = np.array([[0.1, 0.9], [0.4, 0.6]], dtype=np.float32)
    out = relabel_seen(pred, seen, min_confidence=0.8)
    np.testing.assert_array_equal(out.label, [1, 0])  # only the 0.9 cell is renamed
    np.testing.assert_allclose(out.proba[1], proba[1])
    np.testing.assert_array_equal(relabel_seen(pred, seen).label, [1, 1])  # 0: always
