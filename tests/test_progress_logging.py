"""Visible progress without a terminal: stage lines with timings on stderr, ``--quiet`` and
``--verbose``, scanpy's verbosity in Python, tqdm bars only on a terminal."""

from __future__ import annotations

import io
import re

import pytest
import scanpy as sc
from _helpers import run_in

from acsleuth import _logging

STAGE_END = re.compile(r"^\d\d:\d\d:\d\d acsleuth: module I: \d+\.\d\d s$", re.MULTILINE)


def _run(cli_files, *extra: str) -> int:
    return run_in(cli_files, "--no-correct", *extra)


@pytest.fixture(autouse=True)
def _restore_verbosity():
    saved = sc.settings.verbosity
    yield
    _logging.set_verbosity(None)
    sc.settings.verbosity = saved


def test_the_command_logs_stage_starts_and_ends_with_timings(cli_files, capsys) -> None:
    assert _run(cli_files) == 0
    err = capsys.readouterr().err
    assert "acsleuth: module I ..." in err and STAGE_END.search(err), err
    assert "acsleuth: checking the inputs ..." in err  # the checks come first
    assert err.index("checking the inputs") < err.index("module I ...")
    assert "  prepare ..." not in err  # sub-stages only with --verbose


def test_verbose_adds_sub_stages_and_quiet_silences_the_stages(cli_files, capsys) -> None:
    assert _run(cli_files, "--verbose") == 0
    assert re.search(r"acsleuth:   prepare: \d+\.\d\d s", capsys.readouterr().err)
    assert _run(cli_files, "--quiet", "--overwrite") == 0
    assert "acsleuth:" not in capsys.readouterr().err


def test_the_api_follows_scanpys_verbosity(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    sc.settings.verbosity = 1  # warnings only: scanpy's default
    with _logging.stage_timer({}, "outer"):
        pass
    assert stream.getvalue() == ""
    sc.settings.verbosity = 2  # info: the outermost stages
    timings: dict[str, float] = {}
    with _logging.stage_timer(timings, "outer"), _logging.stage_timer(timings, "inner"):
        pass
    assert "outer ..." in stream.getvalue() and "inner" not in stream.getvalue()
    sc.settings.verbosity = 4  # debug: sub-stages too
    with _logging.stage_timer(timings, "outer"), _logging.stage_timer(timings, "inner"):
        pass
    assert re.search(r"acsleuth:   inner: \d+\.\d\d s", stream.getvalue())
    assert set(timings) == {"outer", "outer > inner"}  # a nested stage keyed by its path


def test_bars_only_on_a_terminal_and_a_heartbeat_line_elsewhere(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    _logging.set_verbosity(_logging.logging.INFO)
    monkeypatch.setattr(_logging, "HEARTBEAT_S", 0.0)
    bar = _logging.progress(None, desc="train", total=3)
    bar.update(1)
    bar.set_postfix({"critic": "-0.5"})
    bar.update(1)
    assert re.search(r"acsleuth:   train: 2/3 after \d+ s \(critic -0\.5\)", stream.getvalue())
    assert list(_logging.progress(range(3), desc="x", verbose=False)) == [0, 1, 2]
    monkeypatch.setattr(stream, "isatty", lambda: True, raising=False)
    tty_bar = _logging.progress(range(2), desc="x")
    assert not tty_bar.disable  # a real tqdm bar on a terminal
    tty_bar.close()
