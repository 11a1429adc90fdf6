"""No data loss: inputs stay untouched, outputs appear whole or not at all, even under kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import anndata as ad
import numpy as np
import pytest
from _helpers import cli_command, cli_run, cli_start, cli_stop, run_in

import acsleuth
import acsleuth.cli.run
from acsleuth import _atomic
from acsleuth.cli import main


def _run(cli_files, *extra: str) -> int:
    return run_in(cli_files, "--batch-key", "batch", "--quiet", *extra)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_read_only_inputs_are_read_and_left_byte_identical(cli_files) -> None:
    inputs = [cli_files / "ref.h5ad", cli_files / "tgt.h5ad"]
    before = [_digest(p) for p in inputs]
    for path in inputs:
        os.chmod(path, 0o444)
    assert _run(cli_files) == 0
    assert [_digest(p) for p in inputs] == before
    assert all(os.stat(p).st_mode & 0o777 == 0o444 for p in inputs)


def test_an_existing_out_is_never_replaced_without_overwrite(cli_files, capsys) -> None:
    (cli_files / "out").mkdir()
    (cli_files / "out" / "keep.txt").write_text("mine")
    assert _run(cli_files) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (cli_files / "out" / "keep.txt").read_text() == "mine"
    assert _run(cli_files, "--overwrite") == 0 and not (cli_files / "out" / "keep.txt").exists()


def test_a_run_failing_late_leaves_the_previous_outputs_and_no_temporaries(
    cli_files, monkeypatch
) -> None:
    assert _run(cli_files) == 0
    before = _tree(cli_files / "out")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(acsleuth.cli.run, "_write_report", fail)  # the last output written
    assert _run(cli_files, "--overwrite") == 2
    assert _tree(cli_files / "out") == before
    assert not [p for p in cli_files.iterdir() if p.name.startswith(".")]


def test_an_earlier_output_can_be_screened_again_and_stays_intact(cli_files) -> None:
    assert _run(cli_files) == 0
    earlier = cli_files / "out" / "target.h5ad"
    before = _digest(earlier)
    assert (
        main(
            [
                "run",
                "--reference",
                str(cli_files / "ref.h5ad"),
                "--target",
                str(earlier),
                "--out",
                str(cli_files / "again"),
                "--batch-key",
                "batch",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    assert _digest(earlier) == before
    again = ad.read_h5ad(cli_files / "again" / "target.h5ad")
    assert np.isfinite(again.layers["acsleuth_corrected"]).all()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replacing_a_folder_gives_the_new_contents_whole(tmp_path, monkeypatch, exchange) -> None:
    if not exchange:
        monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    with _atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "old.txt").write_text("old")
    with _atomic.atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (tmp_path / "out" / "old.txt").read_text() == "old"  # untouched until the swap
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]


def test_folders_are_swapped_in_one_atomic_step_on_linux(tmp_path) -> None:
    if not os.uname().sysname == "Linux":
        pytest.skip("renameat2 is Linux's")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    assert _atomic._exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "x").read_text() == "a" and not any((tmp_path / "a").iterdir())


def test_kill_9_at_random_moments_leaves_the_previous_or_the_complete_new_outputs(
    cli_baseline, tmp_path
) -> None:
    start = time.monotonic()
    old = cli_run(cli_command(cli_baseline, tmp_path / "out", "--seed", "1"))
    assert old.returncode == 0, old.stderr
    duration = time.monotonic() - start
    new = cli_baseline / "uninterrupted"  # the same run with the default seed
    old_cells, new_cells = (
        (tmp_path / "out" / "cells.csv").read_text(),
        (new / "cells.csv").read_text(),
    )
    assert old_cells != new_cells
    new_files = sorted(p.relative_to(new) for p in new.rglob("*"))
    for trial, delay in enumerate(np.random.default_rng(0).uniform(0.3, 1.0, 3) * duration):
        args = cli_command(
            cli_baseline,
            tmp_path / "out",
            "--overwrite",
            "--checkpoint-dir",
            str(tmp_path / f"checkpoint{trial}"),
        )
        process = cli_start(args)
        time.sleep(delay)
        cli_stop(process, signal.SIGKILL)
        cells = (tmp_path / "out" / "cells.csv").read_text()
        assert cells in (old_cells, new_cells), f"trial {trial}: out/cells.csv is neither run's"
        if cells == new_cells:  # the whole new output, readable
            assert (
                sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*"))
                == new_files
            )
            assert ad.read_h5ad(tmp_path / "out" / "target.h5ad").n_obs == 100
