"""Cluster heads as networks: group logits ``m (N, K)`` of embeddings ``z (N, d)`` (docs/method.md §8.3).

``m_c = log(p_c / (1 - p_c))`` is the logit of a soft assignment ``p``. Two heads:

- :class:`NeuralKMeans`, the neuralised k-means of ACE: ``p = softmax(-beta * o)`` with
  ``o_c = ||z - mu_c||^2``, computed as a linear layer ``h_ck = w_ck^T z + b_ck``
  (``w_ck = 2 (mu_c - mu_k)``, ``b_ck = ||mu_k||^2 - ||mu_c||^2``) followed by a soft
  min-pooling over ``k != c``: ``m_c = -log sum_{k != c} exp(-beta h_ck)``.
- :class:`StudentTHead`, DESC's Student-t soft assignment (docs/method.md §4),
  ``p_c`` proportional to ``(1 + o_c / nu)^-(nu+1)/2``, so that subtypes found by DESC are
  explained by the assignment that found them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _logit_of_softmax(logits: Tensor) -> Tensor:
    """``log(p_c / (1 - p_c))`` of ``p = softmax(logits)``, without forming ``p``.

    It is ``l_c - logsumexp_{k != c} l_k``; ``-inf`` marks the excluded diagonal.
    """
    k = logits.shape[-1]
    others = logits.unsqueeze(-2).expand(*logits.shape[:-1], k, k)
    mask = torch.eye(k, dtype=torch.bool, device=logits.device)
    return logits - others.masked_fill(mask, float("-inf")).logsumexp(-1)


class NeuralKMeans(nn.Module):
    """Neuralised k-means: ``z (N, d) -> m (N, K)`` with ``K >= 2`` centroids ``(K, d)``.

    The first layer holds ``w (K, K, d)`` and ``b (K, K)`` as buffers (``h_cc = 0`` is masked
    out of the pooling); ``beta > 0`` is the fuzziness of ``softmax(-beta * o)``.
    """

    def __init__(self, centroids: Tensor, beta: float = 1.0) -> None:
        super().__init__()
        mu = torch.as_tensor(centroids, dtype=torch.float32)
        if mu.ndim != 2 or mu.shape[0] < 2:
            raise ValueError(f"NeuralKMeans: centroids must be (K >= 2, d), got {tuple(mu.shape)}")
        if not beta > 0:
            raise ValueError(f"NeuralKMeans: beta must be > 0, got {beta}")
        sq = mu.pow(2).sum(1)
        self.register_buffer("weight", 2.0 * (mu[:, None, :] - mu[None, :, :]))
        self.register_buffer("bias", sq[None, :] - sq[:, None])
        self.beta = float(beta)

    def pairwise(self, z: Tensor) -> Tensor:
        """``h (N, K, K)`` with ``h_ck = w_ck^T z + b_ck = ||z - mu_k||^2 - ||z - mu_c||^2``."""
        return torch.einsum("ckd,nd->nck", self.weight, z) + self.bias

    def forward(self, z: Tensor) -> Tensor:
        h = self.pairwise(z)
        k = h.shape[-1]
        mask = torch.eye(k, dtype=torch.bool, device=z.device)
        return -(-self.beta * h).masked_fill(mask, float("-inf")).logsumexp(-1)


class StudentTHead(nn.Module):
    """DESC's assignment as logits: ``z (N, d) -> m (N, K)``, ``nu`` degrees of freedom."""

    def __init__(self, centroids: Tensor, dof: float = 1.0) -> None:
        super().__init__()
        mu = torch.as_tensor(centroids, dtype=torch.float32)
        if mu.ndim != 2 or mu.shape[0] < 2:
            raise ValueError(f"StudentTHead: centroids must be (K >= 2, d), got {tuple(mu.shape)}")
        if not dof > 0:
            raise ValueError(f"StudentTHead: dof must be > 0, got {dof}")
        self.register_buffer("centroids", mu)
        self.dof = float(dof)

    def forward(self, z: Tensor) -> Tensor:
        sq = (z[:, None, :] - self.centroids[None]).pow(2).sum(-1)
        return _logit_of_softmax(-0.5 * (self.dof + 1.0) * torch.log1p(sq / self.dof))


__all__ = ["NeuralKMeans", "StudentTHead"]
