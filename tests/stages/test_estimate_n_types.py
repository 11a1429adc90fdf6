"""``n_types="auto"``: the target cells the reference leaves unexplained, clustered (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anndata import AnnData

from acsleuth.data import MinibatchLoader, prepare
from acsleuth.stages.annotate import estimate_n_types, nearest, unexplained


def _blobs(centres: list[int], n: int, seed: int, n_genes: int = 20) -> np.ndarray:
    """``n`` cells around each centre: gene block ``c`` (3 genes) raised to 6, noise sd 0.4."""
    rng = np.random.default_rng(seed)
    cells = []
    for c in centres:
        mean = np.full(n_genes, 1.0)
        mean[3 * c : 3 * c + 3] = 6.0
        cells.append(mean + 0.4 * rng.standard_normal((n, n_genes)))
    return np.clip(np.vstack(cells), 0, None).astype(np.float32)


def _loader(x: np.ndarray, name: str) -> MinibatchLoader:
    adata = AnnData(x)
    adata.var_names = [f"g{i}" for i in range(x.shape[1])]
    adata.obs_names = [f"{name}{i}" for i in range(x.shape[0])]
    return MinibatchLoader(prepare(adata, name=name), batch_size=64, shuffle=False)


def test_nearest_equals_brute_force_top_k() -> None:
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(50, 6, generator=g), torch.randn(80, 6, generator=g)
    index, dist = nearest(x, p, 4)
    brute = torch.cdist(x, p) ** 2
    want = brute.topk(4, largest=False)
    assert torch.equal(index, want.indices)
    torch.testing.assert_close(dist, want.values, rtol=1e-4, atol=1e-4)


def test_unexplained_flags_exactly_the_cells_of_a_new_type() -> None:
    reference = _blobs([0, 1], 40, seed=0)
    target = _blobs([0, 1, 4], 40, seed=1)
    flagged = unexplained(reference, target)
    assert flagged.tolist() == [False] * 80 + [True] * 40


@pytest.mark.parametrize(("novel", "want"), [([], 2), ([4], 3), ([4, 5, 6], 5)])
def test_estimate_counts_seen_plus_novel_types(novel: list[int], want: int) -> None:
    reference = _loader(_blobs([0, 1], 60, seed=0), "ref")
    target = _loader(_blobs([0, 1, *novel], 60, seed=1), "tgt")
    k, scores = estimate_n_types(reference, target, 2, seed=0)
    assert k == want
    if len(novel) > 1:
        assert max(scores, key=scores.get) == want and min(scores) == 4  # 2 + 2 clusters tried
