"""memory_attention: parity with the reference, gradients, stability, edges, bad inputs."""

from __future__ import annotations

import pytest
import torch
from _helpers import device_of

from acsleuth.ops import _reference, memory_attention


def _inputs(b, slots, p, dtype, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, p, generator=g, dtype=dtype)
    memory = scale * torch.randn(slots, p, generator=g, dtype=dtype)
    return z, memory


def _forward_backward(fn, z, memory, grad):
    z = z.detach().clone().requires_grad_()
    memory = memory.detach().clone().requires_grad_()
    out = fn(z, memory)
    out.backward(grad)
    return out.detach(), z.grad, memory.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("b", "slots", "p"), [(64, 512, 256), (1, 3, 1), (2, 1, 4), (17, 33, 9)])
def test_forward_and_gradients_match_reference(backend, dtype, b, slots, p):
    z, memory = _inputs(b, slots, p, dtype, seed=b + slots)
    grad = torch.randn(b, p, generator=torch.Generator().manual_seed(1), dtype=dtype)
    dev = device_of(backend)
    got = _forward_backward(
        lambda a, m: memory_attention(a, m), z.to(dev), memory.to(dev), grad.to(dev)
    )
    truth = _forward_backward(
        lambda a, m: _reference.memory_attention(a, m, 0.05, 0.01),
        z.double(),
        memory.double(),
        grad.double(),
    )
    same_dtype = _forward_backward(
        lambda a, m: _reference.memory_attention(a, m, 0.05, 0.01), z, memory, grad
    )
    for g_, t_, s_ in zip(got, truth, same_dtype, strict=True):
        # Error bound relative to a same-precision reference's own error (flash-attn style).
        ref_err = (s_.double() - t_).abs().max().item()
        err = (g_.double().cpu() - t_).abs().max().item()
        scale = t_.abs().max().item() + 1e-30
        assert err <= 4 * ref_err + (1e-5 if dtype == torch.float32 else 1e-12) * scale


@pytest.mark.parametrize("temperature", [0.05, 1e-3, 1e-5])
def test_stable_for_small_temperatures(backend, temperature):
    z, memory = _inputs(32, 64, 16, torch.float32, scale=3.0)
    out = memory_attention(
        z.to(device_of(backend)), memory.to(device_of(backend)), temperature=temperature
    )
    assert torch.isfinite(out).all()
    # With a sharp softmax the readout is the best-matching memory row.
    if temperature <= 1e-3:
        best = (z @ memory.T).argmax(1)
        torch.testing.assert_close(out.cpu(), memory[best], rtol=1e-4, atol=1e-4)


def test_everything_shrunk_gives_zero_not_nan(backend):
    # Uniform attention 1/N_mem below the threshold: every weight shrinks to zero, and the
    # L1 renormalisation's eps keeps the output (and gradient) finite and zero.
    z = torch.zeros(4, 8, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(200, 8, dtype=torch.float64, requires_grad=True)
    dev = device_of(backend)
    out = memory_attention(z.to(dev), memory.to(dev), shrink=0.01)
    assert torch.equal(out.cpu(), torch.zeros(4, 8, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(memory.grad).all()


def test_non_contiguous_inputs(backend):
    z, memory = _inputs(20, 40, 12, torch.float64)
    zt = z.T.contiguous().T  # same values, column-major
    mem_view = torch.repeat_interleave(memory, 2, dim=1)[:, ::2]
    assert not zt.is_contiguous() and not mem_view.is_contiguous()
    dev = device_of(backend)
    got = memory_attention(zt.to(dev), mem_view.to(dev))
    torch.testing.assert_close(got.cpu(), _reference.memory_attention(z, memory, 0.05, 0.01))


def test_gradcheck_float64(backend):
    z, memory = _inputs(6, 10, 5, torch.float64, seed=11, scale=0.5)
    dev = device_of(backend)
    z = z.to(dev).requires_grad_()
    memory = memory.to(dev).requires_grad_()
    # A temperature of 0.5 keeps several weights above the threshold and away from the kink.
    assert torch.autograd.gradcheck(
        lambda a, m: memory_attention(a, m, temperature=0.5, shrink=0.05), (z, memory)
    )


@pytest.mark.parametrize(
    ("z", "memory", "kwargs", "message"),
    [
        (torch.randn(0, 4), torch.randn(5, 4), {}, "z has 0 rows"),
        (torch.randn(3, 4), torch.randn(0, 4), {}, "memory has 0 rows"),
        (torch.randn(3, 4), torch.randn(5, 6), {}, "z has 4 features but memory has 6"),
        (torch.randn(3, 4), torch.randn(5, 4), {"temperature": 0.0}, "temperature must be"),
        (torch.randn(3, 4), torch.randn(5, 4), {"shrink": 1.0}, r"shrink must be in \[0, 1\)"),
        (torch.randn(3, 4), torch.randn(5, 4).double(), {}, "cast them to one dtype"),
        (torch.randn(3, 4, 1), torch.randn(5, 4), {}, "z must be 2-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(backend, z, memory, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        memory_attention(z, memory, **kwargs)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision(monkeypatch, dtype):
    monkeypatch.setenv("ACSLEUTH_BACKEND", "cuda")
    z, memory = _inputs(256, 512, 64, torch.float32, scale=0.1)
    zh, mh = z.to(dtype), memory.to(dtype)
    out = memory_attention(zh.cuda(), mh.cuda())
    truth = _reference.memory_attention(zh.double(), mh.double(), 0.05, 0.01)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), truth, rtol=2e-2, atol=2e-2)
