"""Shared fixtures: the backends present on this machine, and a way to force one."""

from __future__ import annotations

import pytest
import torch
from _helpers import FastACsleuth, available_backends, two_batches

from acsleuth import _extension

_extension.load()


@pytest.fixture(params=["torch", "cpu", "cuda"])
def backend(request, monkeypatch) -> str:
    """Run the test once per backend, forcing it through ACSLEUTH_BACKEND."""
    name = request.param
    if name not in available_backends():
        if name == "cuda":
            pytest.skip("no CUDA GPU or CUDA kernels")
        pytest.fail(f"backend {name} is not available: {_extension.LOAD_ERROR}")
    monkeypatch.setenv("ACSLEUTH_BACKEND", name)
    return name


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() and _extension.HAS_CUDA_OPS:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and the CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cli_files(tmp_path, monkeypatch):
    """Tiny ``ref.h5ad`` and ``tgt.h5ad`` (two target batches) in ``tmp_path``; the command's
    model is patched to a few epochs (:class:`_helpers.FastACsleuth`)."""
    import acsleuth

    monkeypatch.setattr(acsleuth, "ACsleuth", FastACsleuth)
    reference, target = two_batches(120, 50)
    reference.write_h5ad(tmp_path / "ref.h5ad")
    target.write_h5ad(tmp_path / "tgt.h5ad")
    return tmp_path
