"""pytest-benchmark benchmarks: each acsleuth op beside its dense baseline and its peers.

Run (benchmarks are disabled by pyproject's addopts, so enable them explicitly)::

    PYTHONPATH=. pytest benchmarks/bench_ops.py --benchmark-enable

Each group (``--benchmark-group-by=group``, the default) prints acsleuth next to the
baselines measured in the same run. Sizes are modest by default so that the whole file
takes a few minutes on two cores; override them with environment variables::

    ACSLEUTH_BENCH_TOPK="NQ,NK,D"      kin_topk query rows, key rows, features  (2000,20000,128)
    ACSLEUTH_BENCH_PAIR="N,G"          Gaussian pair form points, features       (2000,128)
    ACSLEUTH_BENCH_MEMATTN="B,M,P"     memory attention batch, memory, width     (1024,512,256)
    ACSLEUTH_BENCH_MMD="N,G"           linear gamma-MMD, dense baseline too      (2000,256)
    ACSLEUTH_BENCH_MMD_LARGE="N,G"     linear gamma-MMD, acsleuth only           (200000,256)
    ACSLEUTH_BENCH_DEVICE=cpu|cuda     device of the inputs                      (cpu)
    ACSLEUTH_BENCH_THREADS=N           torch and faiss thread counts   (their defaults)

On a shared machine whose load exceeds its cores, OpenMP barriers make multi-threaded
timings erratic (tens of ms per parallel region); ``ACSLEUTH_BENCH_THREADS=1`` then gives
stable relative numbers.

Optional peers (faiss-cpu, pykeops) are skipped with a reason when they do not import.
Every benchmark also checks once, outside the timed region, that acsleuth and the peer
agree, so a fast but wrong kernel does not go unnoticed.
"""

from __future__ import annotations

import os

import pytest
import torch
from _common import (
    MMD_RATIO,
    chunked_torch_topk,
    dense_mmd_loss,
    dense_pair_form,
    faiss_cpu_topk,
    keops_pair_form,
    set_threads,
    sync,
)

from acsleuth.ops import (
    _reference,
    default_bandwidths,
    gamma_mmd_loss,
    gaussian_pair_form,
    kin_topk,
    memory_attention,
)

try:
    import faiss
except ImportError:  # optional peer
    faiss = None


def _sizes(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = os.environ.get(f"ACSLEUTH_BENCH_{name}")
    if not raw:
        return default
    values = tuple(int(v) for v in raw.replace("x", ",").split(",") if v.strip())
    if len(values) != len(default):
        raise ValueError(
            f"ACSLEUTH_BENCH_{name}={raw!r}: expected {len(default)} comma-separated integers"
        )
    return values


DEVICE = torch.device(os.environ.get("ACSLEUTH_BENCH_DEVICE", "cpu"))
TOPK = _sizes("TOPK", (2000, 20000, 128))
PAIR = _sizes("PAIR", (2000, 128))
MEMATTN = _sizes("MEMATTN", (1024, 512, 256))
MMD = _sizes("MMD", (2000, 256))
MMD_LARGE = _sizes("MMD_LARGE", (200_000, 256))
THREADS = os.environ.get("ACSLEUTH_BENCH_THREADS")
if THREADS:
    set_threads(int(THREADS))
BANDWIDTH_COUNT = 3


def _randn(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE)


@pytest.fixture
def torch_fallback(monkeypatch):
    """Route acsleuth's ops to the pure-PyTorch fallback for this benchmark only."""
    monkeypatch.setenv("ACSLEUTH_BACKEND", "torch")


# --------------------------------------------------------------------------- kin_topk


@pytest.fixture(scope="module")
def topk_inputs():
    n_q, n_k, d = TOPK
    return _randn(n_q, d, seed=1), _randn(n_k, d, seed=2)


def _check_topk(values, indices, ref_values):
    assert indices.shape == ref_values.shape
    torch.testing.assert_close(values.float().cpu(), ref_values.float().cpu(), rtol=0, atol=1e-4)


def _topk_k(k: int):
    group = f"kin_topk cosine k={k} Nq={TOPK[0]} Nk={TOPK[1]} d={TOPK[2]}"
    return pytest.param(k, marks=pytest.mark.benchmark(group=group), id=f"k{k}")


@pytest.mark.parametrize("k", [_topk_k(1), _topk_k(16)])
class TestKinTopk:
    def _run(self, benchmark, fn, k):
        benchmark.extra_info["gflop"] = 2 * TOPK[0] * TOPK[1] * TOPK[2] / 1e9

        def call():
            out = fn()
            sync(DEVICE)
            return out

        return benchmark(call)

    def test_acsleuth(self, benchmark, topk_inputs, k):
        q, keys = topk_inputs
        values, indices = self._run(benchmark, lambda: kin_topk(q, keys, k=k), k)
        _check_topk(values, indices, chunked_torch_topk(q, keys, k)[0])

    def test_acsleuth_torch_fallback(self, benchmark, topk_inputs, k, torch_fallback):
        q, keys = topk_inputs
        values, indices = self._run(benchmark, lambda: kin_topk(q, keys, k=k), k)
        _check_topk(values, indices, chunked_torch_topk(q, keys, k)[0])

    def test_chunked_torch_matmul_topk(self, benchmark, topk_inputs, k):
        q, keys = topk_inputs
        self._run(benchmark, lambda: chunked_torch_topk(q, keys, k), k)

    def test_faiss_index_flat_ip(self, benchmark, topk_inputs, k):
        if faiss is None:
            pytest.skip("faiss is not installed (pip install faiss-cpu)")
        if DEVICE.type != "cpu":
            pytest.skip("faiss-cpu peer runs on CPU inputs only")
        q, keys = topk_inputs
        distances, labels = self._run(benchmark, faiss_cpu_topk(q, keys, k), k)
        _check_topk(
            torch.from_numpy(distances), torch.from_numpy(labels), kin_topk(q, keys, k=k)[0]
        )


# ------------------------------------------------------------------ Gaussian pair form


@pytest.fixture(scope="module")
def pair_inputs():
    n, g = PAIR
    x = _randn(n, g, seed=3)
    phi = _randn(n, 2, seed=4)
    bandwidths = default_bandwidths(x)
    assert len(bandwidths) == BANDWIDTH_COUNT
    return x, phi, bandwidths


@pytest.mark.benchmark(group=f"gaussian_pair_form fwd N={PAIR[0]} G={PAIR[1]} r=2 3 bandwidths")
class TestGaussianPairForm:
    def _run(self, benchmark, fn, inputs):
        x, phi, bandwidths = inputs

        def call():
            out = fn(x, phi, bandwidths)
            sync(DEVICE)
            return out

        out = benchmark(call)
        ref = dense_pair_form(x.double(), phi.double(), bandwidths)
        torch.testing.assert_close(
            out.double().cpu(), ref.cpu(), rtol=1e-3, atol=1e-3 * float(ref.abs().max())
        )

    def test_acsleuth(self, benchmark, pair_inputs):
        self._run(benchmark, gaussian_pair_form, pair_inputs)

    def test_acsleuth_torch_fallback(self, benchmark, pair_inputs, torch_fallback):
        self._run(benchmark, gaussian_pair_form, pair_inputs)

    def test_dense_torch(self, benchmark, pair_inputs):
        self._run(benchmark, dense_pair_form, pair_inputs)

    def test_pykeops(self, benchmark, pair_inputs):
        pytest.importorskip("pykeops.torch", reason="pykeops is not installed (optional peer)")
        self._run(benchmark, keops_pair_form, pair_inputs)


# ------------------------------------------------------------------- memory attention


@pytest.fixture(scope="module")
def memattn_inputs():
    b, m, p = MEMATTN
    z = torch.nn.functional.normalize(_randn(b, p, seed=5), dim=1)
    memory = torch.nn.functional.normalize(_randn(m, p, seed=6), dim=1)
    grad_out = _randn(b, p, seed=7)
    return z, memory, grad_out


def _reference_memory_attention(z, memory, temperature, shrink):
    return _reference.memory_attention(z, memory, temperature, shrink)


@pytest.mark.benchmark(
    group=f"memory_attention fwd+bwd B={MEMATTN[0]} M={MEMATTN[1]} p={MEMATTN[2]}"
)
class TestMemoryAttention:
    def _run(self, benchmark, op, inputs):
        z0, memory0, grad_out = inputs
        z = z0.clone().requires_grad_(True)
        memory = memory0.clone().requires_grad_(True)

        def call():
            out = op(z, memory, 0.05, 0.01)
            grads = torch.autograd.grad(out, (z, memory), grad_out)
            sync(DEVICE)
            return out.detach(), grads

        out, grads = benchmark(call)
        ref = _reference.memory_attention(z0.double(), memory0.double(), 0.05, 0.01)
        torch.testing.assert_close(out.double().cpu(), ref.cpu(), rtol=1e-4, atol=1e-4)
        assert all(bool(torch.isfinite(g).all()) for g in grads)

    def test_acsleuth(self, benchmark, memattn_inputs):
        self._run(
            benchmark,
            lambda z, m, t, s: memory_attention(z, m, temperature=t, shrink=s),
            memattn_inputs,
        )

    def test_unfused_torch_reference(self, benchmark, memattn_inputs):
        self._run(benchmark, _reference_memory_attention, memattn_inputs)


# -------------------------------------------------------------- linear gamma-MMD loss


def _mmd_inputs(n, g):
    delta = _randn(n, g, seed=8)
    p0 = torch.rand(n, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    return delta, p0


@pytest.fixture(scope="module")
def mmd_inputs():
    return _mmd_inputs(*MMD)


@pytest.fixture(scope="module")
def mmd_large_inputs():
    return _mmd_inputs(*MMD_LARGE)


def _acsleuth_mmd(delta, p):
    return gamma_mmd_loss(delta, p, ratio=MMD_RATIO, kernel="linear")


def _loss_and_grad(benchmark, fn, delta, p0):
    p = p0.clone().requires_grad_(True)

    def call():
        loss = fn(delta, p)  # delta does not require grad: only d loss / d p
        (grad,) = torch.autograd.grad(loss, p)
        sync(DEVICE)
        return loss.detach(), grad

    return benchmark(call)


@pytest.mark.benchmark(group=f"gamma_mmd_loss linear fwd+bwd(p) N={MMD[0]} G={MMD[1]}")
class TestGammaMmdLinear:
    def test_acsleuth(self, benchmark, mmd_inputs):
        loss, grad = _loss_and_grad(benchmark, _acsleuth_mmd, *mmd_inputs)
        delta, p0 = mmd_inputs
        p = p0.double().requires_grad_(True)
        ref = dense_mmd_loss(delta.double(), p)
        (ref_grad,) = torch.autograd.grad(ref, p)
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(
            grad.double(), ref_grad, rtol=1e-3, atol=1e-3 * float(ref_grad.abs().max())
        )

    def test_acsleuth_torch_fallback(self, benchmark, mmd_inputs, torch_fallback):
        _loss_and_grad(benchmark, _acsleuth_mmd, *mmd_inputs)

    def test_dense_reference(self, benchmark, mmd_inputs):
        _loss_and_grad(benchmark, dense_mmd_loss, *mmd_inputs)


@pytest.mark.benchmark(
    group=f"gamma_mmd_loss linear fwd+bwd(p) N={MMD_LARGE[0]} G={MMD_LARGE[1]} (no dense: N x N)"
)
def test_gamma_mmd_linear_large_acsleuth_only(benchmark, mmd_large_inputs):
    loss, grad = _loss_and_grad(benchmark, _acsleuth_mmd, *mmd_large_inputs)
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
