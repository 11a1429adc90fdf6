"""Smoke test of ``benchmarks/bench_pipeline.py`` in ``--quick`` mode on tiny data."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"
STAGES = (
    "prepare data (load, HVG)",
    "module I: prepare (no memory)",
    "module I: train (memory bank)",
    "reference residuals",
    "prepare target",
    "reconstruct + chunk scores",
    "mmd predictor: warm start (BCE)",
    "mmd predictor: gamma-MMD epochs",
    "mmd predictor: predict (+ setup)",
    "score end to end (evaluate)",
)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(text: str) -> dict[str, float]:
    """``stage -> cells/s`` from the printed Markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("fit", "score"):
            rows[cells[1]] = float(cells[4].replace(",", ""))
    return rows


def test_quick_run_reports_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_script()
    out = tmp_path / "pipeline.json"
    threads = torch.get_num_threads()
    try:  # one thread: multi-threaded runs crawl on a machine loaded past its core count
        res = bench.main(
            ["--quick", "--genes", "400", "--device", "cpu", "--threads", "1", "--json", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    printed = _table_rows(capsys.readouterr().out)
    assert set(printed) == set(STAGES)
    assert all(rate > 0 for rate in printed.values()), printed
    saved = json.loads(out.read_text())
    assert [row["stage"] for row in saved["rows"]] == list(STAGES)
    for row in saved["rows"]:
        assert row["cells"] == 1000
        assert row["seconds"] > 0 and math.isfinite(row["cells_per_s"]) and row["cells_per_s"] > 0
    assert saved["epochs"] == [1, 1, 1] and saved["warm_epochs"] == 1 and saved["genes"] == 400
    assert saved["peak_rss_bytes"] > 0 and saved["device"] == "cpu"
    assert res["command"].startswith("python benchmarks/bench_pipeline.py --quick")
