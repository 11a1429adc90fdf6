"""Fake (meta) kernels so the compiled ops work under torch.compile and opcheck."""

from __future__ import annotations

import torch


def register() -> None:
    @torch.library.register_fake("acsleuth::gaussian_pair_form")
    def _(x, phi, bandwidths):
        return phi.new_empty(phi.shape[1], phi.shape[1])

    @torch.library.register_fake("acsleuth::_gaussian_pair_form_backward")
    def _(grad, x, phi, bandwidths):
        return torch.empty_like(x), torch.empty_like(phi)

    @torch.library.register_fake("acsleuth::linear_pair_form")
    def _(x, phi):
        r = phi.shape[1]
        return phi.new_empty(r, r), x.new_empty(x.shape[1], r), x.new_empty(x.shape[0])

    @torch.library.register_fake("acsleuth::_linear_pair_form_backward")
    def _(grad, x, phi, a, sq, output_mask):
        grad_x = torch.empty_like(x) if output_mask[0] else x.new_empty(0)
        grad_phi = torch.empty_like(phi) if output_mask[1] else x.new_empty(0)
        return grad_x, grad_phi

    @torch.library.register_fake("acsleuth::memory_attention")
    def _(z, memory, temperature, shrink):
        return z.new_empty(z.shape[0], memory.shape[1]), z.new_empty(z.shape[0], memory.shape[0])

    @torch.library.register_fake("acsleuth::_memory_attention_backward")
    def _(grad_out, z, memory, probs, temperature, shrink):
        return torch.empty_like(z), torch.empty_like(memory)

    @torch.library.register_fake("acsleuth::kin_topk")
    def _(query, keys, k, metric, allow_tf32):
        values = query.new_empty(query.shape[0], k)
        return values, query.new_empty(query.shape[0], k, dtype=torch.long)
