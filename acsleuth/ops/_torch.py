"""Pure-PyTorch backend: the same tiled algorithms as the C++/CUDA kernels, in torch ops.

Used when the compiled library is unavailable or ``ACSLEUTH_BACKEND=torch``. Memory stays
O(N tile) like the kernels: nothing N x N (or N_q x N_k) is ever materialised.
"""

from __future__ import annotations

import torch
from torch import Tensor

_TILE = 1024
_ROWS = 16384


def linear_pair_form(x: Tensor, phi: Tensor) -> Tensor:
    """``A^T A - Phi^T diag(|x_i|^2) Phi`` with ``A = X^T Phi``, summed over row chunks."""
    a = x.new_zeros(phi.shape[1], x.shape[1])
    diag = x.new_zeros(phi.shape[1], phi.shape[1])
    for i0 in range(0, x.shape[0], _ROWS):
        xc, pc = x[i0 : i0 + _ROWS], phi[i0 : i0 + _ROWS]
        a = a + pc.T @ xc
        diag = diag + pc.T @ (pc * (xc * xc).sum(1, keepdim=True))
    return a @ a.T - diag


def _kernel_tile(xi: Tensor, sqi: Tensor, xj: Tensor, sqj: Tensor, coeffs: list[float]):
    """Per-bandwidth Gaussian kernel tiles exp(-c_b d_ij) for rows xi against rows xj."""
    d = (sqi[:, None] + sqj[None, :] - 2.0 * (xi @ xj.T)).clamp_min_(0.0)
    return [torch.exp(-c * d) for c in coeffs]


def _off_diagonal_mask(i0: int, ni: int, j0: int, nj: int, device) -> Tensor | None:
    """Mask zeroing i == j inside tile (i0, j0), or None when the tile has no diagonal."""
    if i0 + ni <= j0 or j0 + nj <= i0:
        return None
    rows = torch.arange(i0, i0 + ni, device=device)[:, None]
    cols = torch.arange(j0, j0 + nj, device=device)[None, :]
    return rows != cols


def gaussian_pair_form_forward(x: Tensor, phi: Tensor, coeffs: list[float]) -> Tensor:
    n, r = x.shape[0], phi.shape[1]
    sq = x.pow(2).sum(1)
    s = x.new_zeros(r, r)
    for i0 in range(0, n, _TILE):
        xi, sqi, ni = x[i0 : i0 + _TILE], sq[i0 : i0 + _TILE], min(_TILE, n - i0)
        kphi = x.new_zeros(ni, r)
        for j0 in range(0, n, _TILE):
            nj = min(_TILE, n - j0)
            k = sum(_kernel_tile(xi, sqi, x[j0 : j0 + nj], sq[j0 : j0 + nj], coeffs))
            mask = _off_diagonal_mask(i0, ni, j0, nj, x.device)
            if mask is not None:
                k = k * mask
            kphi += k @ phi[j0 : j0 + nj]
        s += phi[i0 : i0 + ni].T @ kphi
    return s


def gaussian_pair_form_backward(
    grad: Tensor, x: Tensor, phi: Tensor, coeffs: list[float]
) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    sq = x.pow(2).sum(1)
    psi = phi @ (grad + grad.T)
    grad_x = torch.zeros_like(x)
    grad_phi = torch.zeros_like(phi)
    for i0 in range(0, n, _TILE):
        ni = min(_TILE, n - i0)
        xi, sqi = x[i0 : i0 + ni], sq[i0 : i0 + ni]
        for j0 in range(0, n, _TILE):
            nj = min(_TILE, n - j0)
            xj = x[j0 : j0 + nj]
            tiles = _kernel_tile(xi, sqi, xj, sq[j0 : j0 + nj], coeffs)
            k = sum(tiles)
            kc = sum(c * t for c, t in zip(coeffs, tiles, strict=True))
            a = 2.0 * (phi[i0 : i0 + ni] @ psi[j0 : j0 + nj].T) * kc
            mask = _off_diagonal_mask(i0, ni, j0, nj, x.device)
            if mask is not None:
                k, a = k * mask, a * mask
            grad_phi[i0 : i0 + ni] += k @ psi[j0 : j0 + nj]
            grad_x[i0 : i0 + ni] += a @ xj - a.sum(1, keepdim=True) * xi
    return grad_x, grad_phi


class GaussianPairForm(torch.autograd.Function):
    """Autograd wrapper of the tiled torch pair form (same formulas as the C++ kernels)."""

    @staticmethod
    def forward(ctx, x: Tensor, phi: Tensor, coeffs: list[float]) -> Tensor:
        # Centring leaves S and the gradients unchanged (k depends on differences only) and
        # keeps |xi|^2 + |xj|^2 - 2 xi.xj accurate in float32 far from the origin.
        x = x - x.mean(0, keepdim=True)
        ctx.save_for_backward(x, phi)
        ctx.coeffs = coeffs
        return gaussian_pair_form_forward(x, phi, coeffs)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, phi = ctx.saved_tensors
        grad_x, grad_phi = gaussian_pair_form_backward(grad, x, phi, ctx.coeffs)
        return grad_x, grad_phi, None


def _ranked(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Order candidates by value descending, then index ascending."""
    indices, order = indices.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, order)


def _tile_topk(sims: Tensor, first: int, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of a tile with ties broken by lower index.

    ``torch.topk`` picks arbitrarily among values equal to the k-th one; rows with such a tie
    are redone with a stable sort, which keeps the lowest indices.
    """
    k = min(k, sims.shape[1])
    values, cols = torch.topk(sims, k, dim=1)
    tied = (sims >= values[:, -1:]).sum(1) > k
    if bool(tied.any()):
        redo_v, redo_c = torch.sort(sims[tied], dim=1, descending=True, stable=True)
        values[tied], cols[tied] = redo_v[:, :k], redo_c[:, :k]
    return values, cols + first


def kin_topk(query: Tensor, keys: Tensor, k: int, metric: str) -> tuple[Tensor, Tensor]:
    """Query blocks x key tiles with a running top-k; ties keep the lower key index."""
    if metric == "cosine":
        query = torch.nn.functional.normalize(query, dim=1, eps=1e-12)
        keys = torch.nn.functional.normalize(keys, dim=1, eps=1e-12)
    values, indices = [], []
    for q0 in range(0, query.shape[0], _TILE):
        q = query[q0 : q0 + _TILE]
        best_v = q.new_empty(q.shape[0], 0)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
        for k0 in range(0, keys.shape[0], 4 * _TILE):
            tile_v, tile_i = _tile_topk(q @ keys[k0 : k0 + 4 * _TILE].T, k0, k)
            # Running entries have lower indices than the tile's, so they win ties.
            merged_v, merged_i = _ranked(
                torch.cat([best_v, tile_v], 1), torch.cat([best_i, tile_i], 1)
            )
            best_v, best_i = merged_v[:, :k], merged_i[:, :k]
        values.append(best_v)
        indices.append(best_i)
    return torch.cat(values), torch.cat(indices)
