"""The gamma_c MMD loss of the anomaly predictor (docs/method.md §1.1) and its pair forms.

With ``Phi = [L0(p), L1(p)]`` (N x 2) and kernel matrix K, the loss is
``-<Gamma, S>`` with ``S = Phi^T (K - diag K) Phi``:

- linear kernel: ``S = (Delta^T Phi)^T (Delta^T Phi) - Phi^T diag(|delta_i|^2) Phi``,
  exact in O(N G) time and O(G) extra memory;
- Gaussian kernels: ``S`` from :func:`gaussian_pair_form`, tiled, O(N) memory.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from . import _checks, _reference, _torch
from ._backend import route

Kernel = Literal["linear", "gaussian"]
Gamma = Literal["interp", "reference"]
_SLEUTH_CHUNK = 1024


def _check_pair_form_inputs(op: str, x: Tensor, phi: Tensor) -> None:
    _checks.matrix("x", op, x)
    _checks.matrix("phi", op, phi)
    _checks.same_device_dtype(op, x=x, phi=phi)
    if x.shape[0] != phi.shape[0]:
        raise ValueError(f"{op}: x has {x.shape[0]} rows but phi has {phi.shape[0]}")


def linear_pair_form(x: Tensor, phi: Tensor) -> Tensor:
    """``Phi^T (X X^T - diag X X^T) Phi`` in closed form: one pass over ``x``, no N x N matrix.

    Parameters
    ----------
    x
        ``(N, G)`` points.
    phi
        ``(N, r)`` thin matrix.

    Returns
    -------
    ``(r, r)`` symmetric matrix; differentiable in ``x`` and ``phi``.
    """
    _check_pair_form_inputs("linear_pair_form", x, phi)
    if route(x) == "torch":
        return _torch.linear_pair_form(x, phi)
    return torch.ops.acsleuth.linear_pair_form(x, phi)[0]


def gaussian_pair_form(x: Tensor, phi: Tensor, bandwidths: list[float]) -> Tensor:
    """``S = sum_{i != j} k(x_i, x_j) phi_i phi_j^T`` with ``k = sum_b exp(-|xi-xj|^2 / 2 s_b^2)``.

    Tiled: the N x N kernel matrix is never stored. Differentiable in ``x`` and ``phi``.

    Parameters
    ----------
    x
        ``(N, G)`` points.
    phi
        ``(N, r)`` thin matrix.
    bandwidths
        Kernel bandwidths ``s_b > 0``; the kernel is their sum.

    Returns
    -------
    ``(r, r)`` symmetric matrix.
    """
    op = "gaussian_pair_form"
    _check_pair_form_inputs(op, x, phi)
    bandwidths = [_checks.positive(op, "each bandwidth", s) for s in bandwidths]
    if not bandwidths:
        raise ValueError(f"{op}: give at least one bandwidth")
    if route(x) == "torch":
        coeffs = [0.5 / (s * s) for s in bandwidths]
        return _torch.GaussianPairForm.apply(x, phi, coeffs)
    return torch.ops.acsleuth.gaussian_pair_form(x, phi, bandwidths)


def default_bandwidths(x: Tensor) -> list[float]:
    """Bandwidths around the mean squared pairwise distance D (exact, O(N G)).

    ``2 s_b^2 = c_b D`` with ``c_b in {1/4, 1, 4}``; ``D = 2 N/(N-1) (mean |x|^2 - |mean x|^2)``.
    """
    with torch.no_grad():
        n = x.shape[0]
        mean_sq = torch.einsum("ij,ij->i", x, x).double().mean()
        centre = x.double().mean(0)
        d = float(2.0 * n / max(n - 1, 1) * (mean_sq - centre @ centre))
    base = d if d > 0 else 1.0
    return [math.sqrt(c * base / 2.0) for c in (0.25, 1.0, 4.0)]


def gamma_matrix(m: float | Tensor, n: float | Tensor) -> Tensor:
    """``Gamma = [[1/(m(m-1)), -1/(mn)], [-1/(mn), 1/(n(n-1))]]`` (differentiable in m, n)."""
    m, n = torch.as_tensor(m), torch.as_tensor(n)
    g01 = -1.0 / (m * n)
    return torch.stack(
        [torch.stack([1.0 / (m * (m - 1)), g01]), torch.stack([g01, 1.0 / (n * (n - 1))])]
    )


def group_sizes(
    p: Tensor, m: float | None, n: float | None, ratio: float | None
) -> tuple[float | Tensor, float | Tensor]:
    """(m normal, n anomalous): given, from ``ratio``, or the soft count ``n = sum p``.

    Soft counts are clamped to [2, N - 2] so that every Gamma entry stays finite.
    """
    total = p.shape[0]
    op = "gamma_mmd_loss"
    if ratio is not None:
        if m is not None or n is not None:
            raise ValueError(f"{op}: give either ratio or m/n, not both")
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"{op}: ratio must be in (0, 1), got {ratio}")
        n = float(ratio) * total
    if n is None and m is None:
        if total < 4:
            raise ValueError(f"{op}: soft group sizes need at least 4 cells, got {total}")
        n_soft = p.sum().clamp(2.0, total - 2.0)
        return total - n_soft, n_soft
    n = float(total - m) if n is None else float(n)
    m = float(total - n) if m is None else float(m)
    if m <= 1 or n <= 1:
        raise ValueError(
            f"{op}: both groups need more than one cell (m = {m}, n = {n}); "
            "use a ratio between 1/N and 1 - 1/N"
        )
    return m, n


def _sleuth_weighted_sum(
    delta: Tensor, p: Tensor, m, n, kernel: Kernel, bandwidths: list[float] | None
) -> Tensor:
    """``sum_ij k_ij w_ij`` with the reference library's weights, over row chunks.

    Each chunk is recomputed in the backward pass (checkpointing), so memory stays
    O(chunk x N) instead of N x N.
    """
    if kernel == "gaussian":
        delta = delta - delta.mean(0, keepdim=True)  # same kernel, no float32 cancellation
        sq = torch.einsum("ij,ij->i", delta, delta)
    else:
        sq = None

    def chunk(rows: Tensor, p_rows: Tensor, sq_rows: Tensor | None) -> Tensor:
        if kernel == "linear":
            k = rows @ delta.T
        else:
            d = (sq_rows[:, None] + sq[None, :] - 2.0 * rows @ delta.T).clamp_min(0.0)
            k = sum(torch.exp(-d / (2.0 * s * s)) for s in bandwidths)
        return (k * _reference.sleuth_gamma(p_rows[:, None], p[None, :], m, n)).sum()

    total = delta.new_zeros(())
    for i0 in range(0, delta.shape[0], _SLEUTH_CHUNK):
        rows = slice(i0, i0 + _SLEUTH_CHUNK)
        sq_rows = sq[rows] if sq is not None else None
        total = total + checkpoint(chunk, delta[rows], p[rows], sq_rows, use_reentrant=False)
    return total


def gamma_mmd_loss(
    delta: Tensor,
    p: Tensor,
    *,
    m: float | None = None,
    n: float | None = None,
    ratio: float | None = None,
    kernel: Kernel = "linear",
    bandwidths: list[float] | None = None,
    gamma: Gamma = "interp",
) -> Tensor:
    """MMD between the residuals the predictor calls normal and those it calls anomalous.

    ``L = -sum_{i != j} k(delta_i, delta_j) gamma_c(p_i, p_j)`` (docs/method.md §1.1); minimising it
    maximises the MMD. Differentiable in ``p`` (through Phi and soft m, n) and ``delta``.

    Parameters
    ----------
    delta
        ``(N, G)`` residuals.
    p
        ``(N,)`` or ``(N, 1)`` anomaly probabilities in [0, 1].
    m, n
        Normal and anomalous group sizes; or ``ratio`` (``n = ratio N``); or neither, for
        the soft count ``n = sum p`` (clamped to [2, N - 2]).
    kernel
        ``"linear"`` (exact O(N G) closed form) or ``"gaussian"`` (tiled, sum of kernels).
    bandwidths
        Gaussian bandwidths; default :func:`default_bandwidths` of ``delta``.
    gamma
        ``"interp"`` (the corrected sinc interpolation) or ``"reference"`` (the reference
        library's weight ``p_i p_j / (psi_i^T G' psi_j)``, summed over all pairs including
        ``i = j`` as it does; O(N^2 G) time, chunked).

    Returns
    -------
    Scalar loss.
    """
    op = "gamma_mmd_loss"
    _checks.matrix("delta", op, delta)
    p = _checks.probabilities(op, p, delta.shape[0])
    _checks.same_device_dtype(op, delta=delta, p=p)
    _checks.choice(op, "kernel", kernel, ("linear", "gaussian"))
    _checks.choice(op, "gamma", gamma, ("interp", "reference"))
    if kernel == "gaussian" and bandwidths is None:
        bandwidths = default_bandwidths(delta)
    m_, n_ = group_sizes(p, m, n, ratio)
    if gamma == "reference":
        return -_sleuth_weighted_sum(delta, p, m_, n_, kernel, bandwidths)
    phi = torch.stack([torch.sinc(p), torch.sinc(1.0 - p)], dim=1)
    if kernel == "linear":
        s = linear_pair_form(delta, phi)
    else:
        s = gaussian_pair_form(delta, phi, bandwidths)
    # Given sizes are Python floats: build Gamma in float64 (as_tensor would make it float32,
    # capping a float64 loss at float32 accuracy), then cast to the pair form's dtype.
    m_, n_ = (
        v if isinstance(v, Tensor) else torch.tensor(v, dtype=torch.float64) for v in (m_, n_)
    )
    return -(gamma_matrix(m_, n_).to(s) * s).sum()
