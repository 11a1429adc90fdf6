"""The memory bank: a ring-buffer queue of embeddings read by shrunk softmax attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import ops, parallel
from .._constants import MEMORY_SHRINK, MEMORY_TEMPERATURE, N_MEMORY


class MemoryBank(nn.Module):
    """A queue ``Q (N_mem, p)`` read with :func:`acsleuth.ops.memory_attention` (docs/method.md §1).

    The queue and its write position are buffers: they are saved with the model and are
    not trained by gradient descent; :meth:`enqueue` overwrites the oldest rows. In a
    ``torch.distributed`` run :meth:`enqueue` writes every rank's embeddings, so the queues of
    all ranks stay identical.
    """

    queue: Tensor
    position: Tensor

    def __init__(
        self,
        n_items: int = N_MEMORY,
        dim: int = 256,
        *,
        temperature: float = MEMORY_TEMPERATURE,
        shrink: float = MEMORY_SHRINK,
    ) -> None:
        super().__init__()
        if n_items < 1 or dim < 1:
            raise ValueError(f"MemoryBank needs n_items >= 1 and dim >= 1, got {n_items}, {dim}")
        self.temperature = temperature
        self.shrink = shrink
        bound = 1.0 / math.sqrt(dim)
        self.register_buffer("queue", torch.empty(n_items, dim).uniform_(-bound, bound))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor) -> Tensor:
        dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(z.device.type, enabled=False):  # the fused op runs in float32
            out = ops.memory_attention(
                z.to(dtype), self.queue.to(dtype), temperature=self.temperature, shrink=self.shrink
            )
        return out.to(z.dtype)

    @torch.no_grad()
    def enqueue(self, z: Tensor, *, gather: bool = True) -> None:
        """Write ``z (B, p)`` over the oldest items, wrapping around the end of the queue.

        In a distributed run (and ``gather=True``) the embeddings of all ranks are first
        all-gathered in rank order (``B`` may differ between ranks), and the concatenation is
        written on every rank: every rank must then call ``enqueue`` the same number of times.
        With ``gather=False`` only this rank's queue changes.
        """
        z = z.detach()
        if gather:
            z = parallel.all_gather_rows(z, parallel.context())
        z = z.to(self.queue.dtype)
        n_items = self.queue.shape[0]
        if z.shape[0] >= n_items:  # only the newest n_items survive
            z = z[-n_items:]
            start = 0
        else:
            start = int(self.position)
        rows = (start + torch.arange(z.shape[0], device=z.device)) % n_items
        self.queue[rows.to(self.queue.device)] = z.to(self.queue.device)
        self.position.fill_((start + z.shape[0]) % n_items)

    def extra_repr(self) -> str:
        n_items, dim = self.queue.shape
        return f"n_items={n_items}, dim={dim}, temperature={self.temperature}, shrink={self.shrink}"
