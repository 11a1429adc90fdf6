"""``acsleuth run`` never loses an input: an ``--out`` or ``--checkpoint-dir`` that is a file, is
an input or holds one is refused in one line, before any work, leaving every file as it was."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import FastACsleuth

import acsleuth
from acsleuth.cli import main

ROOT = Path(acsleuth.__file__).resolve().parents[1]


class NeverTrains(FastACsleuth):
    """A model whose training fails the test: a refusal must come before any training."""

    def fit(self, *args, **kwargs):
        raise AssertionError("the command trained before refusing its --out")


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (files with their digest, folders with "dir")."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def files(cli_files, monkeypatch) -> Path:
    monkeypatch.setattr(acsleuth, "ACsleuth", NeverTrains)
    (cli_files / "notes.txt").write_text("a file of the user's")
    return cli_files


def _refused(folder: Path, capsys, *args: str, match: str) -> None:
    """``acsleuth run ARGS`` exits 2 with one line matching ``match``; nothing changed."""
    before = _snapshot(folder)
    rc = main(["run", "--device", "cpu", "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("acsleuth run: error: ") and err.count("\n") == 1, err
    assert match in err, err
    assert _snapshot(folder) == before


def _inputs(folder: Path) -> list[str]:
    return ["--reference", str(folder / "ref.h5ad"), "--target", str(folder / "tgt.h5ad")]


@pytest.mark.parametrize("name", ["tgt.h5ad", "ref.h5ad"])
def test_an_out_that_is_an_input_is_refused_even_with_overwrite(files, capsys, name) -> None:
    _refused(
        files,
        capsys,
        *_inputs(files),
        "--out",
        str(files / name),
        "--overwrite",
        match="is one of the inputs",
    )


def test_an_out_that_is_an_existing_file_is_refused_even_with_overwrite(files, capsys) -> None:
    _refused(
        files,
        capsys,
        *_inputs(files),
        "--out",
        str(files / "notes.txt"),
        "--overwrite",
        match="is a file",
    )


def test_an_out_that_holds_an_input_is_refused(files, capsys, monkeypatch) -> None:
    monkeypatch.chdir(files)
    _refused(
        files,
        capsys,
        "--reference",
        "ref.h5ad",
        "--target",
        "tgt.h5ad",
        "--out",
        ".",
        "--overwrite",
        match="holds the input",
    )
    _refused(
        files,
        capsys,
        *_inputs(files),
        "--out",
        str(files.parent),
        "--overwrite",
        match="holds the input",
    )


def test_an_out_that_holds_the_saved_model_is_refused(files, capsys) -> None:
    (files / "old" / "model").mkdir(parents=True)
    _refused(
        files,
        capsys,
        "--model",
        str(files / "old" / "model"),
        "--target",
        str(files / "tgt.h5ad"),
        "--out",
        str(files / "old"),
        "--overwrite",
        match="holds the input",
    )


def test_an_input_reached_through_a_symlink_is_still_an_input(files, capsys) -> None:
    os.symlink(files / "tgt.h5ad", files / "link.h5ad")
    _refused(
        files,
        capsys,
        "--reference",
        str(files / "ref.h5ad"),
        "--target",
        str(files / "link.h5ad"),
        "--out",
        str(files / "tgt.h5ad"),
        "--overwrite",
        match="is one of the inputs",
    )


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("tgt.h5ad", "is one of the inputs"),
        ("notes.txt", "is a file"),
        (".", "holds the input"),
        ("out/ckpt", "inside --out"),
    ],
)
def test_a_checkpoint_dir_that_could_harm_an_input_or_the_outputs_is_refused(
    files, capsys, where, match
) -> None:
    _refused(
        files,
        capsys,
        *_inputs(files),
        "--out",
        str(files / "out"),
        "--checkpoint-dir",
        str(files / where),
        match=match,
    )


def test_the_issue_command_is_refused_by_the_installed_entry_point(cli_files) -> None:
    """``acsleuth run --target t.h5ad --out t.h5ad --overwrite`` in a fresh process."""
    before = _snapshot(cli_files)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "acsleuth",
            "run",
            "--reference",
            "ref.h5ad",
            "--target",
            "tgt.h5ad",
            "--out",
            "tgt.h5ad",
            "--overwrite",
            "--device",
            "cpu",
            "--quiet",
        ],
        cwd=cli_files,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "is one of the inputs" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert _snapshot(cli_files) == before
