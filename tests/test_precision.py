"""``precision="auto"``: bf16 autocast exactly where the CPU multiplies bf16 natively."""

from __future__ import annotations

import pytest
import torch

from acsleuth import _precision
from acsleuth._constants import Params
from acsleuth._precision import autocast, resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_a_cpu_with_bf16_matrix_units(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(_precision, "cpu_has_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with autocast("cpu", "auto"):
        y = torch.nn.functional.linear(torch.rand(3, 4), torch.rand(2, 4))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


def test_auto_trains_detection_only_in_bf16() -> None:
    params = Params(precision="auto")
    assert params.untrained_precision() == "fp32"
    assert params.style_config().precision == "fp32"
    assert params.detector_config().precision == "auto"
    assert params.scorer_config().precision == "auto"
    assert Params(precision="bf16").style_config().precision == "bf16"


def test_a_bad_precision_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        Params(precision="fp16")
