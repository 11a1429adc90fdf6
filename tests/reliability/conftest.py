"""Shared by the reliability tests: one uninterrupted ``acsleuth run`` in a child process."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import cli_command, cli_run, write_cli_inputs


@pytest.fixture(scope="session")
def cli_baseline(tmp_path_factory) -> Path:
    """A folder with ``ref.h5ad``, ``tgt.h5ad`` and ``uninterrupted/``, the output of a whole run."""
    folder = tmp_path_factory.mktemp("cli")
    write_cli_inputs(folder)
    done = cli_run(cli_command(folder, folder / "uninterrupted"))
    assert done.returncode == 0, done.stderr
    return folder
