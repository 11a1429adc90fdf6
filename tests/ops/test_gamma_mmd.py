"""gamma_c MMD loss and pair forms: corner values, closed form, parity, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import device_of

from acsleuth.ops import (
    _reference,
    default_bandwidths,
    gamma_matrix,
    gamma_mmd_loss,
    gaussian_pair_form,
    linear_pair_form,
)


def _data(n, g, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(n, g, generator=gen, dtype=dtype)
    p = torch.rand(n, generator=gen, dtype=dtype)
    return delta, p


@pytest.mark.parametrize(("m", "n"), [(10.0, 3.0), (2.0, 2.0), (1000.0, 37.5)])
def test_gamma_c_hits_the_four_corner_values(m, n):
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    assert _reference.gamma_c(zero, zero, m, n).item() == pytest.approx(
        1 / (m * (m - 1)), rel=1e-15
    )
    assert _reference.gamma_c(one, one, m, n).item() == pytest.approx(1 / (n * (n - 1)), rel=1e-15)
    assert _reference.gamma_c(zero, one, m, n).item() == pytest.approx(-1 / (m * n), rel=1e-15)
    assert _reference.gamma_c(one, zero, m, n).item() == pytest.approx(-1 / (m * n), rel=1e-15)
    torch.testing.assert_close(
        gamma_matrix(m, n),
        torch.tensor([[1 / (m * (m - 1)), -1 / (m * n)], [-1 / (m * n), 1 / (n * (n - 1))]]),
    )


def test_hard_labels_give_minus_the_unbiased_mmd():
    # With p in {0, 1} the loss is -MMD_u^2 between the two groups (linear kernel).
    delta, _ = _data(30, 5)
    labels = torch.zeros(30, dtype=torch.float64)
    labels[:8] = 1.0
    a, b = delta[labels == 0], delta[labels == 1]
    m, n = len(a), len(b)

    def off_diag_mean(x, y=None):
        k = x @ (x if y is None else y).T
        if y is None:
            return (k.sum() - k.diagonal().sum()) / (len(x) * (len(x) - 1))
        return k.mean()

    mmd = off_diag_mean(a) + off_diag_mean(b) - 2 * off_diag_mean(a, b)
    loss = gamma_mmd_loss(delta, labels, m=m, n=n)
    torch.testing.assert_close(loss, -mmd)


def test_linear_closed_form_equals_the_brute_force_double_sum():
    delta, p = _data(23, 7, seed=1)
    m, n = 15.0, 8.0
    brute = torch.zeros((), dtype=torch.float64)
    for i in range(23):
        for j in range(23):
            if i != j:
                brute -= (delta[i] @ delta[j]) * _reference.gamma_c(p[i], p[j], m, n)
    torch.testing.assert_close(gamma_mmd_loss(delta, p, m=m, n=n, kernel="linear"), brute)


@pytest.mark.parametrize("gamma", ["interp", "reference"])
@pytest.mark.parametrize("kernel", ["linear", "gaussian"])
@pytest.mark.parametrize("sizes", [{"ratio": 0.2}, {"m": 30.0, "n": 10.0}, {}])
def test_loss_matches_dense_reference(backend, gamma, kernel, sizes):
    delta, p = _data(40, 6, seed=2)
    bw = [0.7, 2.5]
    dev = device_of(backend)
    got = gamma_mmd_loss(
        delta.to(dev), p.to(dev), kernel=kernel, bandwidths=bw, gamma=gamma, **sizes
    )
    if "ratio" in sizes:
        m, n = 40 * 0.8, 40 * 0.2
    elif sizes:
        m, n = sizes["m"], sizes["n"]
    else:
        n = p.sum()
        m = 40 - n
    want = _reference.gamma_mmd_loss(delta, p, m, n, kernel, bw, gamma)
    torch.testing.assert_close(got.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("n", "g", "r"), [(1, 3, 2), (2, 1, 1), (255, 4, 2), (257, 4, 2), (600, 9, 3)]
)
def test_gaussian_pair_form_matches_reference(backend, dtype, n, g, r):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, g, generator=gen, dtype=dtype)
    phi = torch.rand(n, r, generator=gen, dtype=dtype)
    bw = [0.5, 1.0, 3.0]
    dev = device_of(backend)
    got = gaussian_pair_form(x.to(dev), phi.to(dev), bw)
    want = _reference.pair_form(x.double(), phi.double(), "gaussian", bw)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    scale = want.abs().max().item() + 1.0
    assert got.shape == (r, r) and got.dtype == dtype
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_gaussian_pair_form_float32_is_accurate_far_from_the_origin(backend, offset):
    # |xi|^2 + |xj|^2 - 2 xi.xj cancels catastrophically in float32 unless x is centred.
    gen = torch.Generator().manual_seed(12)
    x = 0.5 * torch.randn(512, 16, generator=gen, dtype=torch.float64) + offset
    phi = torch.rand(512, 2, generator=gen, dtype=torch.float64)
    upstream = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    bw = default_bandwidths(x)
    dev = device_of(backend)

    def run(dtype, fn, device):
        xs = x.to(device, dtype).requires_grad_()
        ps = phi.to(device, dtype).requires_grad_()
        out = fn(xs, ps)
        (out * upstream.to(device, dtype)).sum().backward()
        return [t.detach().double().cpu() for t in (out, xs.grad, ps.grad)]

    got = run(torch.float32, lambda a, b: gaussian_pair_form(a, b, bw), dev)
    want = run(torch.float64, lambda a, b: _reference.pair_form(a, b, "gaussian", bw), "cpu")
    for g_, w_ in zip(got, want, strict=True):
        assert (g_ - w_).abs().max() <= 2e-5 * w_.abs().max()


def test_gaussian_pair_form_gradients_match_reference(backend):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    phi = torch.rand(300, 2, generator=gen, dtype=torch.float64)
    upstream = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    bw = [0.8, 2.0]
    dev = device_of(backend)

    def grads(fn, device):
        xs = x.to(device).requires_grad_()
        ps = phi.to(device).requires_grad_()
        (fn(xs, ps) * upstream.to(device)).sum().backward()
        return xs.grad.cpu(), ps.grad.cpu()

    got = grads(lambda a, b: gaussian_pair_form(a, b, bw), dev)
    want = grads(lambda a, b: _reference.pair_form(a, b, "gaussian", bw), "cpu")
    for g_, w_ in zip(got, want, strict=True):
        torch.testing.assert_close(g_, w_)


@pytest.mark.parametrize("kernel", ["linear", "gaussian"])
@pytest.mark.parametrize("sizes", [{"ratio": 0.3}, {}])
def test_gradcheck_loss_float64(backend, kernel, sizes):
    gen = torch.Generator().manual_seed(6)
    dev = device_of(backend)
    delta = torch.randn(12, 3, generator=gen, dtype=torch.float64).to(dev).requires_grad_()
    p = (0.1 + 0.8 * torch.rand(12, generator=gen, dtype=torch.float64)).to(dev).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda d, q: gamma_mmd_loss(d, q, kernel=kernel, bandwidths=[1.0, 2.0], **sizes), (delta, p)
    )


def test_gradcheck_gaussian_pair_form_float64(backend):
    gen = torch.Generator().manual_seed(7)
    dev = device_of(backend)
    x = torch.randn(9, 3, generator=gen, dtype=torch.float64).to(dev).requires_grad_()
    phi = torch.rand(9, 2, generator=gen, dtype=torch.float64).to(dev).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: gaussian_pair_form(a, b, [0.9, 1.7]), (x, phi))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("n", "g", "r"), [(1, 3, 2), (2, 1, 1), (7, 5, 2), (130, 33, 2), (67, 9, 3)]
)
def test_linear_pair_form_and_gradients_match_reference(backend, dtype, n, g, r):
    gen = torch.Generator().manual_seed(n + r)
    x = torch.randn(n, g, generator=gen, dtype=dtype)
    phi = torch.rand(n, r, generator=gen, dtype=dtype)
    upstream = torch.randn(r, r, generator=gen, dtype=dtype)
    dev = device_of(backend)

    def run(fn, xs, ps, device):
        xs = xs.detach().clone().to(device).requires_grad_()
        ps = ps.detach().clone().to(device).requires_grad_()
        out = fn(xs, ps)
        (out * upstream.to(device)).sum().backward()
        return out.detach().cpu(), xs.grad.cpu(), ps.grad.cpu()

    got = run(linear_pair_form, x, phi, dev)
    want = run(lambda a, b: _reference.pair_form(a, b, "linear"), x.double(), phi.double(), "cpu")
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    for g_, w_ in zip(got, want, strict=True):
        assert g_.dtype == dtype
        torch.testing.assert_close(
            g_.double(), w_, rtol=tol, atol=tol * (w_.abs().max().item() + 1)
        )


def test_linear_pair_form_skips_the_gradient_nobody_needs(backend):
    # delta is fixed while the predictor trains: only phi (through p) needs a gradient.
    dev = device_of(backend)
    x = torch.randn(50, 6, device=dev)
    phi = torch.rand(50, 2, device=dev, requires_grad=True)
    out = linear_pair_form(x, phi)
    (grad_phi,) = torch.autograd.grad(out.sum(), phi)
    want = torch.autograd.grad(_reference.pair_form(x, phi, "linear").sum(), phi)[0]
    torch.testing.assert_close(grad_phi, want, rtol=1e-4, atol=1e-4)


def test_expanded_upstream_gradient(backend):
    dev = device_of(backend)
    x = torch.randn(30, 4, device=dev, dtype=torch.float64, requires_grad=True)
    phi = torch.rand(30, 2, device=dev, dtype=torch.float64, requires_grad=True)
    grad = torch.ones((), dtype=torch.float64, device=dev).expand(2, 2)  # stride (0, 0)
    for fn in (linear_pair_form, lambda a, b: gaussian_pair_form(a, b, [1.0])):
        got = torch.autograd.grad(fn(x, phi), (x, phi), grad)
        ref = (
            (lambda a, b: _reference.pair_form(a, b, "linear"))
            if fn is linear_pair_form
            else (lambda a, b: _reference.pair_form(a, b, "gaussian", [1.0]))
        )
        want = torch.autograd.grad(ref(x, phi), (x, phi), grad)
        for g_, w_ in zip(got, want, strict=True):
            torch.testing.assert_close(g_, w_)


@pytest.mark.parametrize("bad", ["grad", "a", "sq"])
def test_linear_pair_form_backward_op_rejects_mismatched_shapes(bad):
    x, phi = torch.randn(6, 5, dtype=torch.float64), torch.rand(6, 3, dtype=torch.float64)
    _, a, sq = torch.ops.acsleuth.linear_pair_form(x, phi)
    args = {"grad": torch.ones(3, 3, dtype=torch.float64), "a": a, "sq": sq}
    args[bad] = {"grad": torch.ones(1, 3), "a": a[:2], "sq": sq[:2]}[bad].double()
    with pytest.raises(RuntimeError, match=f"{bad} must"):
        torch.ops.acsleuth._linear_pair_form_backward(
            args["grad"], x, phi, args["a"], args["sq"], [True, True]
        )


def test_linear_pair_form_needs_no_quadratic_memory():
    # 200k x 64 would need a 160 GB dense kernel; the closed form touches O(N G) memory.
    x = torch.randn(200_000, 64)
    phi = torch.rand(200_000, 2)
    s = linear_pair_form(x, phi)
    a = x.double().T @ phi.double()
    want = a.T @ a - phi.double().T @ (phi.double() * x.double().pow(2).sum(1, keepdim=True))
    torch.testing.assert_close(s.double(), want, rtol=1e-4, atol=1e-2 * want.abs().max().item())


def test_default_bandwidths_follow_the_mean_pairwise_distance():
    x, _ = _data(50, 4, seed=8)
    d = torch.cdist(x, x).pow(2)
    mean_sq = (d.sum() / (50 * 49)).item()
    assert default_bandwidths(x) == pytest.approx(
        [math.sqrt(c * mean_sq / 2) for c in (0.25, 1, 4)]
    )


def test_soft_group_sizes_are_clamped_to_keep_gamma_finite():
    delta, _ = _data(10, 3, seed=9)
    p = torch.zeros(10, dtype=torch.float64, requires_grad=True)  # sum p = 0 < 2
    loss = gamma_mmd_loss(delta, p)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 1.5}, r"ratio must be in \(0, 1\)"),
        ({"ratio": 0.2, "m": 3.0}, "either ratio or m/n"),
        ({"m": 1.0, "n": 19.0}, "more than one cell"),
        ({"kernel": "rbf"}, "kernel must be one of"),
        ({"gamma": "paper"}, "gamma must be one of"),
        ({"kernel": "gaussian", "bandwidths": [1.0, -2.0]}, "bandwidth must be finite and > 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    delta, p = _data(20, 3)
    with pytest.raises(ValueError, match=message):
        gamma_mmd_loss(delta, p, **kwargs)


def test_bad_tensors_raise_clear_errors():
    delta, p = _data(20, 3)
    with pytest.raises(ValueError, match="probabilities in"):
        gamma_mmd_loss(delta, p + 1.0)
    with pytest.raises(ValueError, match=r"p must have shape \(20,\)"):
        gamma_mmd_loss(delta, p[:5])
    with pytest.raises(ValueError, match="delta has 0 rows"):
        gamma_mmd_loss(delta[:0], p[:0])
    with pytest.raises(ValueError, match="at least 4 cells"):
        gamma_mmd_loss(delta[:3], p[:3])
    with pytest.raises(ValueError, match="x has 20 rows but phi has 5"):
        gaussian_pair_form(delta, p[:5, None], [1.0])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_pair_form(monkeypatch, dtype):
    monkeypatch.setenv("ACSLEUTH_BACKEND", "cuda")
    x, p = _data(700, 16, dtype=torch.float32, seed=10)
    phi = torch.stack([p, 1 - p], 1)
    xh, ph = x.to(dtype), phi.to(dtype)
    got = gaussian_pair_form(xh.cuda(), ph.cuda(), [2.0, 6.0])
    want = _reference.pair_form(xh.double(), ph.double(), "gaussian", [2.0, 6.0])
    torch.testing.assert_close(
        got.double().cpu(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item()
    )
