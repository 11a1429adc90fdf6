"""Property tests: the three fused ops against the dense float64 references under stress."""

from __future__ import annotations

import torch
from _helpers import device_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acsleuth.ops import (
    _reference,
    default_bandwidths,
    gamma_mmd_loss,
    gaussian_pair_form,
    kin_topk,
    linear_pair_form,
    memory_attention,
)
from acsleuth.ops.gamma_mmd import gamma_matrix, group_sizes

# Tolerances below are forward error bounds: u is the unit roundoff of the op's dtype, and
# each bound is the textbook one for the sums and products involved, evaluated in float64
# on absolute values, times a safety factor of 2 (every kernel sums in a different order).
UNIT = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
DTYPES = st.sampled_from([torch.float32, torch.float64])
SEEDS = st.integers(0, 2**31 - 1)


def _settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def _sizes(tiles: tuple[int, ...], small: int):
    """Small sizes, or one row below, at or above a block/tile size the kernels use."""
    edges = sorted({t + d for t in tiles for d in (-1, 0, 1)})
    return st.one_of(st.integers(1, small), st.sampled_from(edges))


def _rows(n: int, g: int, dtype, seed: int, lo: float, spread: float, zero_rows: float = 0.0):
    """Gaussian rows, row i scaled by 10^(lo + spread U_i): norms over `spread` decades."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, g, generator=gen, dtype=torch.float64)
    x *= 10.0 ** (lo + spread * torch.rand(n, 1, generator=gen, dtype=torch.float64))
    if zero_rows:
        x[torch.rand(n, generator=gen, dtype=torch.float64) < zero_rows] = 0.0
    return x.to(dtype)


def _probabilities(n: int, seed: int, hard: float):
    """p in [0, 1] with a fraction `hard` of entries exactly 0 or exactly 1."""
    gen = torch.Generator().manual_seed(seed + 1)
    p = torch.rand(n, generator=gen, dtype=torch.float64)
    pick = torch.rand(n, generator=gen, dtype=torch.float64)
    p[pick < hard / 2] = 0.0
    p[(pick >= hard / 2) & (pick < hard)] = 1.0
    return p


def _assert_within(got: torch.Tensor, truth: torch.Tensor, bound: torch.Tensor, what: str):
    got = got.detach().double().cpu()
    assert torch.isfinite(got).all(), f"{what}: non-finite values where the reference is finite"
    if got.numel() == 0:
        return
    excess = (got - truth).abs() - bound
    worst = int(excess.argmax())
    assert bool((excess <= 0).all()), (
        f"{what}: error {(got - truth).abs().flatten()[worst]:.3e} > bound "
        f"{bound.flatten()[worst]:.3e} at flat index {worst} (value {truth.flatten()[worst]:.3e})"
    )


# --------------------------------------------------------------------------------------
# Pair forms and the gamma_c MMD loss
# --------------------------------------------------------------------------------------

# CPU kernels: linear_pair_form sums rows in blocks of 64 (4 rows per sweep when r = 2);
# gaussian_pair_form tiles rows by 256. The torch fallback tiles the Gaussian form by 1024.
PAIR_ROWS = _sizes((4, 64, 128, 256), 12)


@_settings(150)
@given(
    n=PAIR_ROWS,
    g=st.integers(1, 40),
    r=st.integers(1, 3),
    dtype=DTYPES,
    seed=SEEDS,
    lo=st.floats(-12, 8),
    spread=st.sampled_from([0.0, 2.0, 6.0]),
    zero_rows=st.sampled_from([0.0, 0.3]),
)
def test_linear_pair_form_and_its_gradients_stay_within_rounding_of_the_dense_form(
    backend, n, g, r, dtype, seed, lo, spread, zero_rows
):
    # Norms from 1e-12 to 1e14 (x x^T up to 1e28 G, still a float32 number).
    x = _rows(n, g, dtype, seed, lo, spread, zero_rows)
    phi = _rows(n, r, dtype, seed + 7, 0.0, 1.0)
    w = torch.randn(r, r, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dev = device_of(backend)
    xd = x.to(dev).clone().requires_grad_()
    phid = phi.to(dev).clone().requires_grad_()
    s = linear_pair_form(xd, phid)
    (s * w.to(dev, dtype)).sum().backward()

    x64 = x.double().clone().requires_grad_()
    phi64 = phi.double().clone().requires_grad_()
    truth = _reference.pair_form(x64, phi64, "linear")
    (truth * w).sum().backward()
    # The closed form sums every pair including i == j and then subtracts the diagonal, so
    # its error is bounded through the full sum on absolute values: |phi|^T |X||X|^T |phi|.
    xa = x.double().abs().requires_grad_()
    pa = phi.double().abs().requires_grad_()
    full = pa.T @ (xa @ xa.T) @ pa
    (full * w.abs()).sum().backward()
    gamma = 2 * (n + g + 8) * UNIT[dtype]
    _assert_within(s, truth.detach(), gamma * full.detach(), "S")
    _assert_within(xd.grad, x64.grad, gamma * xa.grad, "dS/dx")
    _assert_within(phid.grad, phi64.grad, gamma * pa.grad, "dS/dphi")


def _gaussian_bound(x64, phi64, bandwidths, unit):
    """Error bound of the tiled Gaussian pair form, from the dense distances in float64.

    Both backends centre x and form d_ij = |x_i|^2 + |x_j|^2 - 2 x_i.x_j, whose error is at
    most (G + 4) u (|x_i|^2 + |x_j|^2); the kernel is then exact up to the exp over that
    interval of d (plus a few ulp), and the contraction with phi adds (N + 4) u relative.
    """
    n, g = x64.shape
    xc = x64 - x64.mean(0, keepdim=True)
    sq = (xc * xc).sum(1)
    d = (xc[:, None, :] - xc[None, :, :]).pow(2).sum(-1)
    dd = (g + 4) * unit * (sq[:, None] + sq[None, :]) + (g + 4) * unit * sq.max() * unit
    k_err = torch.zeros_like(d)
    k_abs = torch.zeros_like(d)
    for s in bandwidths:
        c = 0.5 / (s * s)
        k_err += torch.exp(-c * (d - dd).clamp_min(0)) - torch.exp(-c * (d + dd)) + 8 * unit
        k_abs += torch.exp(-c * d)
    off = 1.0 - torch.eye(n, dtype=torch.float64)
    pa = phi64.abs()
    return pa.T @ ((k_err + (n + 8) * unit * k_abs) * off) @ pa


@_settings(100)
@given(
    n=_sizes((256,), 12),
    g=st.integers(1, 12),
    r=st.integers(1, 3),
    dtype=DTYPES,
    seed=SEEDS,
    lo=st.floats(-6, 6),
    spread=st.sampled_from([0.0, 1.0, 3.0]),
    offset=st.sampled_from([0.0, 1e3]),
    width=st.floats(1e-3, 1e3),
)
def test_gaussian_pair_form_stays_within_rounding_of_the_dense_form(
    backend, n, g, r, dtype, seed, lo, spread, offset, width
):
    x = _rows(n, g, torch.float64, seed, lo, spread)
    x = (x + offset * 10.0**lo).to(dtype)  # a cloud far from the origin, relative to its size
    phi = _rows(n, r, dtype, seed + 3, 0.0, 1.0)
    scale = max(float(default_bandwidths(x.double())[1]), 1e-30)
    bandwidths = [scale * width, scale]
    dev = device_of(backend)
    got = gaussian_pair_form(x.to(dev), phi.to(dev), bandwidths)
    truth = _reference.pair_form(x.double(), phi.double(), "gaussian", bandwidths)
    bound = 2 * _gaussian_bound(x.double(), phi.double(), bandwidths, UNIT[dtype])
    _assert_within(got, truth, bound, "S")


def _loss_inputs(n, g, dtype, seed, lo, spread, hard, groups):
    delta = _rows(n, g, dtype, seed, lo, spread)
    p = _probabilities(n, seed, hard).to(dtype)
    if groups == "soft":
        sizes = {}
    else:
        n_anomalies = max(2, min(n - 2, round(groups * n)))
        sizes = {"ratio": n_anomalies / n}
    return delta, p, sizes


@_settings(150)
@given(
    n=_sizes((64, 256), 20).filter(lambda n: n >= 4),
    g=st.integers(1, 16),
    dtype=DTYPES,
    seed=SEEDS,
    lo=st.floats(-5, 5),
    spread=st.sampled_from([0.0, 2.0]),
    hard=st.sampled_from([0.0, 0.5, 1.0]),
    groups=st.sampled_from(["soft", 0.1, 0.5, 0.9]),
    kernel=st.sampled_from(["linear", "gaussian"]),
)
def test_gamma_mmd_loss_with_hard_probabilities_matches_the_reference_and_has_finite_gradients(
    backend, n, g, dtype, seed, lo, spread, hard, groups, kernel
):
    # hard = 1.0: every p is exactly 0 or exactly 1, where sinc(p) and sinc(1 - p) hit their
    # corner values (and the soft counts may clamp); the loss and its gradients must stay
    # finite and match the float64 reference.
    delta, p, sizes = _loss_inputs(n, g, dtype, seed, lo, spread, hard, groups)
    bandwidths = default_bandwidths(delta) if kernel == "gaussian" else None
    dev = device_of(backend)
    dd, pd = delta.to(dev).clone().requires_grad_(), p.to(dev).clone().requires_grad_()
    loss = gamma_mmd_loss(dd, pd, kernel=kernel, bandwidths=bandwidths, **sizes)
    loss.backward()

    d64, p64 = delta.double().clone().requires_grad_(), p.double().clone().requires_grad_()
    ratio = sizes.get("ratio")
    m_, n_ = group_sizes(p64, None, None, ratio)
    truth = _reference.gamma_mmd_loss(d64, p64, m_, n_, kernel, bandwidths)
    truth.backward()

    unit = UNIT[dtype]
    phi = torch.stack([torch.sinc(p64), torch.sinc(1 - p64)], 1).detach()
    if kernel == "linear":
        xa = delta.double().abs()
        s_bound = 2 * (n + g + 8) * unit * (phi.abs().T @ (xa @ xa.T) @ phi.abs())
    else:
        s_bound = 2 * _gaussian_bound(delta.double(), phi, bandwidths, unit)
    gam = gamma_matrix(m_, n_).detach().double().abs()
    s_abs = _reference.pair_form(delta.double().abs(), phi.abs(), kernel, bandwidths).abs()
    # Loss error: <|Gamma|, bound_S>, plus the rounding of Gamma, Phi and the final sum.
    bound = (gam * s_bound).sum() + 16 * unit * (gam * s_abs).sum()
    _assert_within(loss, truth.detach(), bound, f"loss ({kernel})")
    assert torch.isfinite(dd.grad).all() and torch.isfinite(pd.grad).all(), "non-finite gradient"
    assert torch.isfinite(d64.grad).all() and torch.isfinite(p64.grad).all()


# --------------------------------------------------------------------------------------
# memory_attention
# --------------------------------------------------------------------------------------

# The CPU kernel hands rows to threads in grains of 16; the CUDA kernel reads the memory
# in tiles of up to 1024 slots.
BATCH = _sizes((16, 32), 6)
SLOTS = _sizes((16, 256, 1024), 40)


def _attention_bound(z, memory, temperature, shrink):
    """Reference output in float64 and an elementwise error bound for the op's dtype.

    Logits carry at most (P + 2) u |z||M|^T; a softmax weight a_k then has relative error
    expm1(2 max dL / t + u |y_k| + 4 u) (y_k the scaled, shifted logit) plus the error of the
    normaliser. Hard shrinkage is a jump at a = shrink: rows with a weight within its error
    of the threshold are 'ambiguous' (either side is a correct rounding) and are skipped.
    """
    unit = UNIT[z.dtype]
    z64, m64 = z.double(), memory.double()
    n_slots = memory.shape[0]
    logits = z64 @ m64.T
    d_logits = (z.shape[1] + 2) * unit * (z64.abs() @ m64.abs().T)
    y = (logits - logits.max(1, keepdim=True).values) / temperature
    a = torch.softmax(y, 1)
    e = torch.expm1(
        2 * d_logits.max(1, keepdim=True).values / temperature + unit * y.abs() + 4 * unit
    )
    e = e.clamp(max=1e300)  # an unbounded error makes the row ambiguous, not NaN
    rel_a = e + (a * e).sum(1, keepdim=True) + (n_slots + 4) * unit
    margin = 2 * a * rel_a + 1e-11
    ambiguous = ((a - shrink).abs() <= margin).any(1)
    keep = (a > shrink).double()
    v = a * keep
    w = v / v.sum(1, keepdim=True).clamp_min(1e-12)
    rel_v = rel_a + 8 * unit
    rel_w = rel_v + (w * rel_v).sum(1, keepdim=True) + (n_slots + 4) * unit
    bound = (w * rel_w + (n_slots + 4) * unit * w) @ m64.abs()
    truth = _reference.memory_attention(z64, m64, temperature, shrink)
    return truth, 2 * bound, ambiguous


def _check_attention(backend, z, memory, temperature, shrink):
    dev = device_of(backend)
    zd, md = z.to(dev).clone().requires_grad_(), memory.to(dev).clone().requires_grad_()
    out = memory_attention(zd, md, temperature=temperature, shrink=shrink)
    truth, bound, ambiguous = _attention_bound(z, memory, temperature, shrink)
    got = out.detach().double().cpu()
    assert torch.isfinite(got).all(), "non-finite output where the float64 reference is finite"
    # Nonnegative weights summing to 1 (or all shrunk to 0): a convex combination of slots.
    hull = memory.double().abs().amax(0) * (1 + 1e-3) + 1e-30
    assert bool((got.abs() <= hull).all()), "output outside the convex hull of the memory"
    clear = ~ambiguous
    _assert_within(got[clear], truth[clear], bound[clear], "memory_attention")

    # Gradients: finite wherever the float64 reference's are (and fit in the dtype).
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad.to(dev, z.dtype))
    z64, m64 = z.double().clone().requires_grad_(), memory.double().clone().requires_grad_()
    _reference.memory_attention(z64, m64, temperature, shrink).backward(grad)
    limit = 1e30 if z.dtype == torch.float32 else 1e300
    for name, mine, ref in (("z", zd.grad, z64.grad), ("memory", md.grad, m64.grad)):
        ref_ok = bool(torch.isfinite(ref).all()) and float(ref.abs().max()) < limit
        if ref_ok:
            assert torch.isfinite(mine).all(), f"non-finite gradient for {name}"
    return got, truth, ambiguous


@_settings(150)
@given(
    b=BATCH,
    slots=SLOTS,
    p=st.integers(1, 24),
    dtype=DTYPES,
    seed=SEEDS,
    lo=st.floats(-3, 2),
    temperature=st.floats(1e-2, 10.0),
    shrink=st.sampled_from([0.0, 1e-3, 0.01, 0.2, 0.9]),
)
def test_memory_attention_stays_within_rounding_of_the_reference(
    backend, b, slots, p, dtype, seed, lo, temperature, shrink
):
    z = _rows(b, p, dtype, seed, lo, 1.0)
    memory = _rows(slots, p, dtype, seed + 5, lo, 1.0)
    _check_attention(backend, z, memory, temperature, shrink)


@_settings(150)
@given(
    b=BATCH,
    slots=SLOTS,
    p=st.integers(1, 24),
    dtype=DTYPES,
    seed=SEEDS,
    lo=st.floats(-2, 3),
    log_t=st.floats(-6, -3),
    shrink=st.sampled_from([0.0, 0.01, 0.5]),
    duplicate=st.booleans(),
)
def test_memory_attention_stays_finite_at_tiny_temperatures(
    backend, b, slots, p, dtype, seed, lo, log_t, shrink, duplicate
):
    # logits / t reach 1e12: the softmax saturates to a one-hot (or splits evenly between
    # exactly equal slots when the memory repeats a row), never to NaN or inf.
    temperature = 10.0**log_t
    z = _rows(b, p, dtype, seed, lo, 1.0)
    memory = _rows(slots, p, dtype, seed + 5, lo, 1.0)
    if duplicate and slots > 1:
        memory[-1] = memory[0]
    got, _, ambiguous = _check_attention(backend, z, memory, temperature, shrink)
    # Where the best logit beats the runner-up by far more than t and the rounding, the
    # readout is that memory row.
    z64, m64 = z.double(), memory.double()
    logits = z64 @ m64.T
    if slots > 1:
        top = logits.topk(2, dim=1)
        slack = 2 * (p + 2) * UNIT[dtype] * (z64.abs() @ m64.abs().T).amax(1)
        decisive = (top.values[:, 0] - top.values[:, 1] > 50 * temperature + slack) & ~ambiguous
        best = m64[top.indices[:, 0]]
        tol = 4 * (slots + 8) * UNIT[dtype] * m64.abs().amax(0)
        assert bool(((got - best).abs()[decisive] <= tol).all()), "saturated softmax is not one-hot"


# --------------------------------------------------------------------------------------
# kin_topk
# --------------------------------------------------------------------------------------

# CPU kernel: query blocks of 512 rows, key tiles of 1024; torch fallback: query blocks of
# 1024, key tiles of 4096; CUDA: tiles of up to 1024 keys.
QUERIES = _sizes((512,), 8)
KEYS = _sizes((64, 1024), 70)


def _similarities(query, keys, metric):
    """Float64 similarities of the given inputs and a per-row bound on their rounding error."""
    unit = UNIT[query.dtype]
    d = query.shape[1]
    q64, k64 = query.double(), keys.double()
    if metric == "cosine":
        q64 = torch.nn.functional.normalize(q64, dim=1, eps=1e-12)
        k64 = torch.nn.functional.normalize(k64, dim=1, eps=1e-12)
        err = torch.full((query.shape[0],), (3 * d + 12) * unit, dtype=torch.float64)
    else:
        err = (d + 2) * unit * (q64.abs() @ k64.abs().T).amax(1)
    return q64 @ k64.T, 2 * err


def _check_topk(query, keys, k, metric, values, indices):
    n_q, n_k = query.shape[0], keys.shape[0]
    assert values.shape == (n_q, k) and indices.shape == (n_q, k)
    assert values.dtype == query.dtype and indices.dtype == torch.long
    values, indices = values.double().cpu(), indices.cpu()
    assert torch.isfinite(values).all()
    assert bool(((indices >= 0) & (indices < n_k)).all()), "index out of range"
    assert bool((indices.sort(1).values.diff(dim=1) > 0).all()), "an index repeats within a row"
    assert bool((values[:, :-1] >= values[:, 1:]).all()), "values not sorted descending"
    # Tie rule: equal similarities are listed by ascending key index.
    equal = values[:, :-1] == values[:, 1:]
    assert bool((indices[:, :-1] < indices[:, 1:])[equal].all()), "a tie is not in index order"
    sims, err = _similarities(query, keys, metric)
    ref_v, _ = sims.sort(dim=1, descending=True, stable=True)
    err = err[:, None]
    # Every returned value is its key's similarity, and the k-th order statistic of values
    # within err of the true ones is within err of the true k-th value.
    assert bool(((sims.gather(1, indices) - values).abs() <= err).all()), "value/index mismatch"
    assert bool(((values - ref_v[:, :k]).abs() <= err).all()), "not the k largest values"


@_settings(150)
@given(
    n_q=QUERIES,
    n_k=KEYS,
    d=st.integers(1, 12),
    k_frac=st.floats(0, 1),
    dtype=DTYPES,
    metric=st.sampled_from(["cosine", "dot"]),
    seed=SEEDS,
    lo=st.floats(-6, 6),
    spread=st.sampled_from([0.0, 6.0]),
    zero_rows=st.sampled_from([0.0, 0.2]),
    duplicates=st.sampled_from([0, 1, 5]),
)
def test_kin_topk_finds_the_k_most_similar_keys_at_any_shape_and_norm(
    backend, n_q, n_k, d, k_frac, dtype, metric, seed, lo, spread, zero_rows, duplicates
):
    # Norms spread over 6 decades (up to 1e12 with lo = 6): cosine is scale-free and dot
    # products up to 1e26 d are still float32 numbers. k runs from 1 to min(64, N_k).
    k = 1 + round(k_frac * (min(64, n_k) - 1))
    query = _rows(n_q, d, dtype, seed, lo, spread, zero_rows)
    keys = _rows(n_k, d, dtype, seed + 11, lo, spread, zero_rows)
    if duplicates:  # exact copies of key rows (ties) spread over the key range
        src = torch.randint(0, n_k, (duplicates,), generator=torch.Generator().manual_seed(seed))
        dst = torch.randint(
            0, n_k, (duplicates,), generator=torch.Generator().manual_seed(seed + 1)
        )
        keys[dst] = keys[src]
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=k, metric=metric)
    _check_topk(query, keys, k, metric, values, indices)


@_settings(100)
@given(
    n_q=st.integers(1, 6),
    period=st.integers(1, 9),
    copies=st.sampled_from([2, 3, 120, 150]),
    d=st.integers(1, 6),
    k_frac=st.floats(0, 1),
    dtype=DTYPES,
    exponent=st.integers(-20, 20),
    seed=SEEDS,
)
def test_kin_topk_breaks_exact_ties_by_the_lowest_key_index(
    backend, n_q, period, copies, d, k_frac, dtype, exponent, seed
):
    # Small integers times a power of two: every product and sum is exact in float32, so
    # repeated keys give bit-equal similarities on every backend and the only correct answer
    # is the reference's: equal values ordered by ascending index, earliest copies first.
    # 120 or 150 copies of up to 9 keys cross the 1024-key tile.
    gen = torch.Generator().manual_seed(seed)
    base = torch.randint(-3, 4, (period, d), generator=gen).double()
    keys = (base.repeat(copies, 1) * 2.0**exponent).to(dtype)
    query = (torch.randint(-3, 4, (n_q, d), generator=gen).double() * 2.0**-exponent).to(dtype)
    n_k = keys.shape[0]
    k = 1 + round(k_frac * (min(64, n_k) - 1))
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=k, metric="dot")
    ref_v, ref_i = _reference.kin_topk(query.double(), keys.double(), k, "dot")
    assert torch.equal(values.double().cpu(), ref_v)
    assert torch.equal(indices.cpu(), ref_i)


@_settings(80)
@given(
    n_k=st.integers(1, 64),
    d=st.integers(1, 8),
    dtype=DTYPES,
    metric=st.sampled_from(["cosine", "dot"]),
    seed=SEEDS,
    lo=st.floats(-6, 6),
)
def test_kin_topk_with_k_equal_to_the_number_of_keys_ranks_every_key(
    backend, n_k, d, dtype, metric, seed, lo
):
    query = _rows(3, d, dtype, seed, lo, 3.0)
    keys = _rows(n_k, d, dtype, seed + 1, lo, 3.0)
    dev = device_of(backend)
    values, indices = kin_topk(query.to(dev), keys.to(dev), k=n_k, metric=metric)
    assert torch.equal(indices.sort(1).values.cpu(), torch.arange(n_k).expand(3, n_k))
    _check_topk(query, keys, n_k, metric, values, indices)
