"""kin_topk: every backend against the dense reference, ties, edges, bad inputs, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from _helpers import device_of

from acsleuth.ops import _reference, kin_topk

DTYPES = [torch.float32, torch.float64]


def _assert_matches_reference(query, keys, k, metric, values, indices):
    ref_v, ref_i = _reference.kin_topk(query.double(), keys.double(), k, metric)
    tol = 1e-5 if query.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(values.double().cpu(), ref_v.cpu(), rtol=tol, atol=tol)
    # Indices must agree wherever the reference's neighbours are separated by more than
    # the rounding error; within a near-tie either choice is correct.
    sims = ref_v.cpu()
    gaps = torch.cat([sims[:, :-1] - sims[:, 1:], torch.full_like(sims[:, :1], 1.0)], 1)
    prev_gaps = torch.cat([torch.full_like(sims[:, :1], 1.0), gaps[:, :-1]], 1)
    clear = (gaps > 10 * tol) & (prev_gaps > 10 * tol)
    assert torch.equal(indices.cpu()[clear], ref_i.cpu()[clear])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("k", [1, 7, 64])
def test_matches_reference(backend, dtype, metric, k):
    g = torch.Generator().manual_seed(k)
    query = torch.randn(300, 24, generator=g, dtype=dtype)
    keys = torch.randn(2100, 24, generator=g, dtype=dtype)
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=k, metric=metric)
    assert values.shape == (300, k) and indices.shape == (300, k)
    assert indices.dtype == torch.long and values.dtype == dtype
    assert bool((values[:, :-1] >= values[:, 1:]).all()), "values must be sorted descending"
    _assert_matches_reference(query, keys, k, metric, values, indices)


@pytest.mark.parametrize(
    ("n_q", "n_k", "d"),
    [(1, 1, 1), (2, 2, 3), (1, 5, 1), (511, 1023, 5), (513, 1025, 5), (512, 1024, 2), (3, 4097, 8)],
)
def test_edge_shapes(backend, n_q, n_k, d):
    g = torch.Generator().manual_seed(n_q * 7 + n_k)
    query = torch.randn(n_q, d, generator=g, dtype=torch.float64)
    keys = torch.randn(n_k, d, generator=g, dtype=torch.float64)
    k = min(3, n_k)
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=k, metric="dot")
    _assert_matches_reference(query, keys, k, "dot", values, indices)


def test_k_equals_number_of_keys_returns_a_full_ranking(backend):
    g = torch.Generator().manual_seed(3)
    query, keys = torch.randn(20, 6, generator=g), torch.randn(9, 6, generator=g)
    dev = device_of(backend)
    _, indices = kin_topk(query.to(dev), keys.to(dev), k=9)
    assert torch.equal(indices.sort(dim=1).values.cpu(), torch.arange(9).expand(20, 9))


def test_non_contiguous_inputs(backend):
    g = torch.Generator().manual_seed(4)
    base_q = torch.randn(40, 16, generator=g, dtype=torch.float64)
    base_k = torch.randn(16, 500, generator=g, dtype=torch.float64)
    query, keys = base_q[:, ::2], base_k.T[:, 3:11]  # strided and transposed views
    assert not query.is_contiguous() and not keys.is_contiguous()
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=4, metric="cosine")
    _assert_matches_reference(query, keys, 4, "cosine", values, indices)


def test_ties_go_to_the_lowest_index(backend):
    # Keys repeat every 5 rows across tile boundaries, so each similarity value appears many
    # times; the k best must be the earliest copies, sorted by index within a value. Small
    # integers make every product exact, so equal keys give bit-equal similarities on any
    # backend (BLAS may round the same dot product differently at different tile positions).
    gen = torch.Generator().manual_seed(5)
    base = torch.randint(-3, 4, (5, 4), generator=gen).double()
    keys = base.repeat(600, 1)  # 3000 keys, crossing the CPU key tile (1024)
    query = torch.randint(-3, 4, (7, 4), generator=gen).double()
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=12, metric="dot")
    ref_v, ref_i = _reference.kin_topk(query, keys, 12, "dot")
    assert torch.equal(indices.cpu(), ref_i)
    torch.testing.assert_close(values.cpu(), ref_v)
    best = (query @ base.T).argmax(1)  # first maximum: the lowest index among equals
    assert torch.equal(indices[:, 0].cpu(), best)


def test_zero_vectors_under_cosine_are_finite(backend):
    query = torch.zeros(3, 4)
    keys = torch.randn(10, 4, generator=torch.Generator().manual_seed(7))
    values, indices = kin_topk(query.to(device_of(backend)), keys.to(device_of(backend)), k=2)
    assert torch.isfinite(values).all()
    assert torch.equal(indices.cpu(), torch.tensor([[0, 1]] * 3))


def test_result_carries_no_gradient(backend):
    query = torch.randn(5, 3, requires_grad=True)
    keys = torch.randn(8, 3, requires_grad=True)
    values, _ = kin_topk(query.to(device_of(backend)), keys.to(device_of(backend)), k=2)
    assert not values.requires_grad


@pytest.mark.parametrize(
    ("query", "keys", "kwargs", "message"),
    [
        (torch.randn(4, 3), torch.randn(2, 3), {"k": 3}, "only 2 keys"),
        (torch.randn(4, 3), torch.randn(80, 3), {"k": 65}, r"k must be an integer in \[1, 64\]"),
        (torch.randn(4, 3), torch.randn(8, 3), {"k": 0}, r"k must be an integer"),
        (torch.randn(0, 3), torch.randn(8, 3), {}, "query has 0 rows"),
        (torch.randn(4, 3), torch.randn(0, 3), {}, "keys has 0 rows"),
        (torch.randn(4, 3), torch.randn(8, 5), {}, "query has 3 features but keys have 5"),
        (torch.randn(4), torch.randn(8, 4), {}, "query must be 2-D"),
        (torch.randn(4, 3), torch.randn(8, 3).double(), {}, "cast them to one dtype"),
        (torch.randn(4, 3), torch.randn(8, 3), {"metric": "l2"}, "metric must be one of"),
        (
            torch.ones(4, 3, dtype=torch.long),
            torch.ones(8, 3, dtype=torch.long),
            {},
            "floating-point",
        ),
        (
            torch.tensor([[1.0, float("nan")], [1.0, 2.0]]),
            torch.randn(8, 2),
            {},
            "query has 1 rows with NaN or inf",
        ),
        (
            torch.randn(4, 2),
            torch.tensor([[float("inf"), 0.0]] * 3),
            {},
            "keys has 3 rows with NaN or inf",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(backend, query, keys, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        kin_topk(query, keys, **kwargs)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_accumulates_in_fp32(monkeypatch, dtype):
    monkeypatch.setenv("ACSLEUTH_BACKEND", "cuda")
    g = torch.Generator().manual_seed(8)
    query, keys = torch.randn(500, 64, generator=g), torch.randn(3000, 64, generator=g)
    qh, kh = query.to(dtype), keys.to(dtype)
    values, _ = kin_topk(qh.cuda(), kh.cuda(), k=5)
    # Truth from the rounded inputs in float64: only accumulation error may remain.
    ref_v, _ = _reference.kin_topk(qh.double(), kh.double(), 5, "cosine")
    torch.testing.assert_close(values.double().cpu(), ref_v, rtol=0, atol=1e-2)


@pytest.mark.cuda
def test_cuda_tf32_opt_in_is_close():
    g = torch.Generator().manual_seed(9)
    query, keys = (
        torch.randn(300, 128, generator=g).cuda(),
        torch.randn(5000, 128, generator=g).cuda(),
    )
    exact_v, _ = kin_topk(query, keys, k=3)
    tf32_v, _ = kin_topk(query, keys, k=3, allow_tf32=True)
    torch.testing.assert_close(tf32_v, exact_v, rtol=0, atol=5e-3)


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, torch
    from acsleuth.ops import kin_topk
    n, d, k = (int(a) for a in sys.argv[1:4])
    g = torch.Generator().manual_seed(0)
    query, keys = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    kin_topk(query[:300], keys[:2000], k=k)  # warm-up: library, thread pool, allocator
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    values, indices = kin_topk(query, keys, k=k)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mb": (after - before) / 1024, "shape": list(indices.shape)}))
    """
)


@pytest.mark.slow
def test_50k_by_50k_adds_under_200_mb(backend):
    if backend != "cpu":
        pytest.skip("memory probe measures host RSS of the compiled CPU kernels")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, "50000", "64", "64"],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [50000, 64]
    # The dense similarity matrix alone would be 50000^2 * 4 B = 10 GB.
    assert result["extra_mb"] < 200, result
