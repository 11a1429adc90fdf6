"""The README keeps its promises: the first commands, the tutorial (run with few epochs), the
Makefile's torch step and the licence."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import anndata as ad
import pytest

import acsleuth
from acsleuth.cli import main

ROOT = Path(acsleuth.__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
QUICK = ["--epochs", "prepare=2,train=1,score=2,style=1,subtype=2", "--device", "cpu", "--quiet"]


def _blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section whose heading starts with ``section``."""
    match = re.search(rf"^## {re.escape(section)}.*?(?=^## )", README, re.MULTILINE | re.DOTALL)
    assert match, section
    return re.findall(rf"```{language}\n(.*?)```", match.group(0), re.DOTALL)


def test_the_first_commands_are_make_demo_and_make_test() -> None:
    first = re.search(r"```bash\n(.*?)```", README, re.DOTALL).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    targets = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: setup", targets, re.MULTILINE) and re.search(
        r"^test: setup", targets, re.MULTILINE
    )


def test_the_makefile_installs_the_torch_the_readme_names() -> None:
    def torch_line(*variables: str) -> str:
        dry = subprocess.run(
            ["make", "-n", "-B", "setup", "PYTHON=python3", *variables],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return next(line for line in dry.splitlines() if 'pip install "torch==' in line)

    version = re.search(
        r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE
    )[1]
    assert f"torch=={version}" in README.split("## Install")[0]  # the pin the README promises
    assert "--index-url" not in torch_line()  # pip's configured index by default
    assert torch_line("TORCH_INDEX=https://example.invalid/cpu").endswith(
        "--index-url https://example.invalid/cpu"
    )
    assert "TORCH_INDEX" in README.split("## Install")[0]


def test_the_licence_is_mit_as_pyproject_says() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert re.search(
        r'^license = \{ text = "MIT" \}$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )


@pytest.mark.slow
def test_the_tutorial_runs_from_h5ad_files_to_the_outputs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make, inspect = _blocks("Tutorial", "python")
    exec(make, {})
    (command,) = _blocks("Tutorial", "bash")
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["acsleuth", "run"]
    assert main([*argv[1:], *QUICK]) == 0
    scope: dict = {}
    exec(inspect, scope)
    annotated = scope["annotated"]
    assert {"acsleuth_score", "acsleuth_anomaly", "acsleuth_subtype"} <= set(annotated.obs)
    for name in ("target.h5ad", "cells.csv", "report.md", "model"):
        assert (tmp_path / "results" / name).exists(), name
    assert ad.read_h5ad("target.h5ad").n_obs == annotated.n_obs
