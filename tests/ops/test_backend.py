"""Backend selection, the no-compiler fallback, the JIT build, and opcheck of every op."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _helpers import available_backends

from acsleuth import _extension, ops


def test_backend_reports_compiled_cpu_ops():
    assert _extension.HAS_OPS, _extension.LOAD_ERROR
    assert ops.backend("cpu") == "cpu"


@pytest.mark.parametrize("forced", ["torch", "cpu"])
def test_environment_variable_forces_a_backend(monkeypatch, forced):
    monkeypatch.setenv("ACSLEUTH_BACKEND", forced)
    assert ops.backend("cpu") == forced


def test_forcing_a_backend_that_does_not_match_the_device_is_explained(monkeypatch):
    monkeypatch.setenv("ACSLEUTH_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="ACSLEUTH_BACKEND=cuda but the tensors are on cpu"):
        ops.backend("cpu")


def test_unknown_backend_name_is_explained(monkeypatch):
    monkeypatch.setenv("ACSLEUTH_BACKEND", "gpu")
    with pytest.raises(ValueError, match="ACSLEUTH_BACKEND='gpu' is not one of"):
        ops.backend("cpu")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=900,
    )


def test_missing_library_warns_once_and_falls_back_to_torch():
    result = _run(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch
            from acsleuth import ops
            ops.backend(); ops.backend()
            q = torch.randn(50, 4)
            values, indices = ops.kin_topk(q, q, k=1)
            assert ops.backend() == "torch"
            assert torch.equal(indices[:, 0], torch.arange(50))
            loss = ops.gamma_mmd_loss(q, torch.rand(50), ratio=0.1, kernel="gaussian")
            assert torch.isfinite(loss)
        messages = [str(w.message) for w in caught if "compiled ops unavailable" in str(w.message)]
        assert len(messages) == 1, messages
        print("fallback ok")
        """,
        ACSLEUTH_PREBUILT="0",
        ACSLEUTH_JIT="0",
    )
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


@pytest.mark.slow
def test_jit_build_when_the_library_is_absent(tmp_path):
    result = _run(
        """
        import torch
        import acsleuth._extension as ext
        from acsleuth import ops
        assert ext.HAS_OPS, ext.LOAD_ERROR
        assert ops.backend() == "cpu"
        q = torch.randn(40, 8)
        assert torch.equal(ops.kin_topk(q, q, k=1)[1][:, 0], torch.arange(40))
        print("jit ok")
        """,
        ACSLEUTH_PREBUILT="0",
        ACSLEUTH_CACHE=str(tmp_path),
        MAX_JOBS="2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jit ok" in result.stdout
    assert list(tmp_path.glob("*/acsleuth_C.so"))


def _opcheck_cases(device: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64).to(device)
    phi = torch.rand(40, 2, generator=g, dtype=torch.float64).to(device)
    z = torch.randn(6, 8, generator=g, dtype=torch.float64).to(device)
    memory = torch.randn(10, 8, generator=g, dtype=torch.float64).to(device)
    return [
        (
            torch.ops.acsleuth.gaussian_pair_form.default,
            (x.requires_grad_(), phi.requires_grad_(), [1.0, 2.0]),
        ),
        (
            torch.ops.acsleuth.linear_pair_form.default,
            (x.detach().requires_grad_(), phi.detach().requires_grad_()),
        ),
        (torch.ops.acsleuth.linear_pair_form.default, (x.detach(), phi.detach().requires_grad_())),
        (
            torch.ops.acsleuth.memory_attention.default,
            (z.requires_grad_(), memory.requires_grad_(), 0.5, 0.05),
        ),
        (torch.ops.acsleuth.kin_topk.default, (x.detach(), x.detach()[:30], 3, "cosine", False)),
        (torch.ops.acsleuth.kin_topk.default, (x.detach(), x.detach()[:30], 1, "dot", False)),
    ]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("case", range(6))
def test_opcheck(device, case):
    if device not in {"cpu"} | ({"cuda"} if "cuda" in available_backends() else set()):
        pytest.skip(f"no compiled {device} kernels")
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)
