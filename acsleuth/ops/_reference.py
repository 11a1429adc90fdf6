"""Slow, obviously-correct references for the fused ops (dense; small inputs only).

Tests compare every backend against these; they follow docs/method.md §1, §1.1 and §2 literally.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kernel_matrix(x: Tensor, kernel: str, bandwidths: list[float] | None = None) -> Tensor:
    """Dense N x N kernel: ``x x^T`` (linear) or ``sum_b exp(-|xi-xj|^2 / 2 s_b^2)``."""
    if kernel == "linear":
        return x @ x.T
    d = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)
    return sum(torch.exp(-d / (2.0 * s * s)) for s in bandwidths)


def pair_form(x: Tensor, phi: Tensor, kernel: str, bandwidths: list[float] | None = None) -> Tensor:
    """``Phi^T (K - diag K) Phi`` with the dense kernel matrix."""
    k = kernel_matrix(x, kernel, bandwidths)
    k = k - torch.diag_embed(torch.diagonal(k))
    return phi.T @ k @ phi


def gamma_c(p_i: Tensor, p_j: Tensor, m: float | Tensor, n: float | Tensor) -> Tensor:
    """Interpolated weight gamma_c(p_i, p_j) of docs/method.md §1.1 (s = 1 means anomaly)."""
    l0_i, l1_i = torch.sinc(p_i), torch.sinc(1 - p_i)
    l0_j, l1_j = torch.sinc(p_j), torch.sinc(1 - p_j)
    g00, g11, g01 = 1 / (m * (m - 1)), 1 / (n * (n - 1)), -1 / (m * n)
    return l0_i * l0_j * g00 + l1_i * l1_j * g11 + (l0_i * l1_j + l1_i * l0_j) * g01


def sleuth_gamma(p_i: Tensor, p_j: Tensor, m: float | Tensor, n: float | Tensor) -> Tensor:
    """The reference library's weight ``p_i p_j / (psi_i^T G' psi_j)``, psi = (p, 1 - p)."""
    den = (
        m * (m - 1) * p_i * p_j
        + m * n * ((1 - p_i) * p_j + p_i * (1 - p_j))
        + n * (n - 1) * (1 - p_i) * (1 - p_j)
    )
    return p_i * p_j / den


def gamma_mmd_loss(
    delta: Tensor,
    p: Tensor,
    m: float | Tensor,
    n: float | Tensor,
    kernel: str = "linear",
    bandwidths: list[float] | None = None,
    gamma: str = "interp",
) -> Tensor:
    """``-sum_{i != j} k_ij gamma_c(p_i, p_j)`` (interp) or the reference library's full sum."""
    k = kernel_matrix(delta, kernel, bandwidths)
    p = p.reshape(-1)
    if gamma == "interp":
        w = gamma_c(p[:, None], p[None, :], m, n)
        w = w - torch.diag_embed(torch.diagonal(w))
    else:
        w = sleuth_gamma(p[:, None], p[None, :], m, n)
    return -(k * w).sum()


def memory_attention(z: Tensor, memory: Tensor, temperature: float, shrink: float) -> Tensor:
    """Softmax attention over the memory, hard shrinkage, L1 renormalisation, readout."""
    a = torch.softmax(z @ memory.T / temperature, dim=1)
    a = torch.relu(a - shrink) * a / (torch.abs(a - shrink) + 1e-12)
    a = torch.nn.functional.normalize(a, p=1, dim=1, eps=1e-12)
    return a @ memory


def kin_topk(query: Tensor, keys: Tensor, k: int, metric: str) -> tuple[Tensor, Tensor]:
    """Dense similarities, stable descending sort: ties keep the lower key index."""
    if metric == "cosine":
        query = torch.nn.functional.normalize(query, dim=1, eps=1e-12)
        keys = torch.nn.functional.normalize(keys, dim=1, eps=1e-12)
    sims = query @ keys.T
    values, indices = torch.sort(sims, dim=1, descending=True, stable=True)
    return values[:, :k], indices[:, :k]
