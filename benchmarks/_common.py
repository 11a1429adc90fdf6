"""What the benchmark scripts share: the device, thread and file helpers, and the dense or
chunked PyTorch peers of acsleuth's fused ops.

Import it before ``acsleuth``: in a source checkout without ``PYTHONPATH`` it puts the
checkout on ``sys.path`` first. The scripts find it beside them (``python benchmarks/x.py``
puts ``benchmarks/`` on the path; pytest has it in ``pythonpath``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

if importlib.util.find_spec("acsleuth") is None:  # source checkout without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acsleuth import ACsleuth
from acsleuth._atomic import atomic_path
from acsleuth._resources import cpu_model
from acsleuth.ops import _reference

MMD_RATIO = 0.1
"""Anomaly ratio fixing the group sizes of the linear gamma-MMD cases."""


# ---------------------------------------------------------------------- device, threads, files


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU model otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and, when it is installed, in faiss."""
    torch.set_num_threads(n)
    with contextlib.suppress(ImportError):
        import faiss

        faiss.omp_set_num_threads(n)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name and rename it into place."""
    with atomic_path(path, overwrite=True) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)


def package_default(name: str) -> Any:
    """The default of one :class:`acsleuth.ACsleuth` parameter."""
    return inspect.signature(ACsleuth).parameters[name].default


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python benchmarks/<script> ARGS`` as typed (``argv`` None: this process's arguments)."""
    words = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *words])


# ---------------------------------------------------------------------- peers of the fused ops


def chunked_torch_topk(
    query: torch.Tensor, keys: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The obvious torch peer of ``kin_topk``: normalise, then ``topk`` of blocks of
    ``query @ keys.T`` (256 MiB per block on the CPU, 1 GiB on CUDA)."""
    query = torch.nn.functional.normalize(query, dim=1)
    keys = torch.nn.functional.normalize(keys, dim=1)
    budget = (1024 if keys.is_cuda else 256) * 2**20  # bytes of one similarity block
    rows = max(1, budget // (4 * keys.shape[0]))
    values, indices = [], []
    for q0 in range(0, query.shape[0], rows):
        v, i = torch.topk(query[q0 : q0 + rows] @ keys.T, k, dim=1)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


def faiss_cpu_topk(
    query: torch.Tensor, keys: torch.Tensor, k: int
) -> Callable[[], tuple[Any, Any]]:
    """The faiss-cpu peer of ``kin_topk``: L2-normalised numpy copies are made now; the call
    returned builds an ``IndexFlatIP``, adds the keys and searches, as acsleuth also starts
    from the raw key matrix. Raises ImportError without faiss."""
    import faiss

    qn, kn = query.numpy().copy(), keys.numpy().copy()
    faiss.normalize_L2(qn)
    faiss.normalize_L2(kn)

    def search() -> tuple[Any, Any]:
        index = faiss.IndexFlatIP(kn.shape[1])
        index.add(kn)
        return index.search(qn, k)

    return search


def dense_pair_form(x: torch.Tensor, phi: torch.Tensor, bandwidths: list[float]) -> torch.Tensor:
    """Dense peer of ``gaussian_pair_form``: ``cdist``, the summed Gaussians, then
    ``Phi^T (K - diag K) Phi``."""
    d2 = torch.cdist(x, x).square_()
    k = sum(torch.exp(d2 * (-0.5 / (s * s))) for s in bandwidths)
    del d2
    k.diagonal().zero_()
    return phi.T @ (k @ phi)


def keops_pair_form(x: torch.Tensor, phi: torch.Tensor, bandwidths: list[float]) -> torch.Tensor:
    """pykeops peer of ``gaussian_pair_form`` (raises ImportError without pykeops)."""
    from pykeops.torch import LazyTensor

    x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    d2 = ((x_i - x_j) ** 2).sum(-1)
    k = sum((d2 * (-0.5 / (s * s))).exp() for s in bandwidths)
    # The N x N kernel stays symbolic; every Gaussian is 1 on the diagonal, so remove
    # len(bandwidths) * phi_i phi_i^T.
    return phi.T @ (k @ phi) - len(bandwidths) * (phi.T @ phi)


def dense_mmd_loss(delta: torch.Tensor, p: torch.Tensor, ratio: float = MMD_RATIO) -> torch.Tensor:
    """Dense peer of the linear ``gamma_mmd_loss``: the N x N reference, group sizes from
    ``ratio``."""
    n = ratio * delta.shape[0]
    return _reference.gamma_mmd_loss(delta, p, delta.shape[0] - n, n, kernel="linear")
