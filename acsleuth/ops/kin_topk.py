"""Streaming top-k similarity search for kin matching (docs/method.md §2)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import _checks, _torch
from ._backend import route

MAX_K = 64


def kin_topk(
    query: Tensor,
    keys: Tensor,
    *,
    k: int = 1,
    metric: Literal["cosine", "dot"] = "cosine",
    allow_tf32: bool = False,
) -> tuple[Tensor, Tensor]:
    """The ``k`` most similar keys of every query, streamed over key tiles.

    Never allocates the ``N_q x N_k`` similarity matrix. Not differentiable: the result
    carries no gradient (inputs are detached). Inputs must be finite.

    Parameters
    ----------
    query
        ``(N_q, d)`` floating-point tensor.
    keys
        ``(N_k, d)`` tensor on the same device with the same dtype.
    k
        Neighbours per query, ``1 <= k <= min(64, N_k)``.
    metric
        ``"cosine"`` (default) or ``"dot"`` (the reference library's choice).
    allow_tf32
        On CUDA, let tiles use TF32 tensor cores (faster, ~1e-3 relative error).

    Returns
    -------
    values, indices
        ``(N_q, k)`` similarities sorted descending and their ``int64`` key indices;
        equal similarities are ordered by ascending key index.
    """
    op = "kin_topk"
    _checks.matrix("query", op, query)
    _checks.matrix("keys", op, keys)
    _checks.same_device_dtype(op, query=query, keys=keys)
    _checks.choice(op, "metric", metric, ("cosine", "dot"))
    if query.shape[1] != keys.shape[1]:
        raise ValueError(
            f"{op}: query has {query.shape[1]} features but keys have {keys.shape[1]}; "
            "embed both with the same encoder"
        )
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"{op}: k must be an integer in [1, {MAX_K}], got {k!r}")
    if k > keys.shape[0]:
        raise ValueError(f"{op}: k = {k} but there are only {keys.shape[0]} keys; lower k")
    for name, t in (("query", query), ("keys", keys)):
        bad = int((~torch.isfinite(t)).any(1).sum())
        if bad:
            raise ValueError(
                f"{op}: {name} has {bad} rows with NaN or inf values; drop or impute them first"
            )
    query, keys = query.detach(), keys.detach()
    if route(query) == "torch":
        return _torch.kin_topk(query, keys, k, metric)
    return torch.ops.acsleuth.kin_topk(query, keys, k, metric, allow_tf32)
