"""Checks every subcommand makes before any work, so that no input is ever lost.

An output folder (``--out``) or a checkpoint folder is refused when it is an existing file,
is one of the inputs, holds one (``--out .`` beside the inputs: ``--overwrite`` would replace
them) or lies inside an input folder (a 10x folder, a saved model). A checkpoint folder inside
``--out`` is refused too: ``--out`` is replaced as a whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

Inputs = Mapping[str, "str | os.PathLike | None"]
"""The command's input paths by option name (``{"--target": "t.h5ad", ...}``; None: not given)."""


def check_output_folder(
    path: str | os.PathLike, inputs: Inputs, *, option: str = "--out", overwrite: bool = False
) -> Path:
    """Refuse an output folder that could replace, hold or sit inside an input (see the module
    docstring), or that exists without ``overwrite``. Returns it as a :class:`Path`."""
    folder = Path(path)
    check_folder_spares_inputs(folder, inputs, option=option)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{option} {folder} exists; pass --overwrite to replace it")
    return folder


def check_output_file(
    path: str | os.PathLike, inputs: Inputs, *, option: str = "--out", overwrite: bool = False
) -> Path:
    """Refuse an output file that is one of the inputs (even with ``overwrite``), an existing
    folder, or an existing file without ``overwrite``. Returns it as a :class:`Path`."""
    out = Path(path)
    for name, given in inputs.items():
        if given is not None and _same(out, Path(given)):
            raise ValueError(
                f"{option} {out} is one of the inputs ({name}); inputs are never "
                "overwritten: name a new file, e.g. annotated.h5ad"
            )
    if out.is_dir():
        raise ValueError(f"{option} {out} is a folder; it must name a file, e.g. annotated.h5ad")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{option} {out} exists; pass --overwrite to replace it")
    return out


def check_folder_spares_inputs(folder: Path, inputs: Inputs, *, option: str) -> None:
    """The checks of :func:`check_output_folder` that protect the inputs."""
    where = _resolved(folder)
    given = {name: Path(p) for name, p in inputs.items() if p is not None}
    for name, path in given.items():
        if _same(folder, path):
            raise ValueError(
                f"{option} {folder} is one of the inputs ({name}); name a new folder "
                "for the outputs, e.g. results/"
            )
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{option} {folder} is a file; it must name a folder for the outputs "
            "(created by the run), e.g. results/"
        )
    for name, path in given.items():
        resolved = _resolved(path)
        if where in resolved.parents:
            raise ValueError(
                f"{option} {folder} holds the input {path} ({name}), which writing the "
                "outputs would replace; name a new folder, e.g. results/"
            )
        if path.is_dir() and resolved in where.parents:
            raise ValueError(
                f"{option} {folder} lies inside the input folder {path} ({name}); "
                "inputs are never written into: name a folder outside it"
            )


def check_checkpoint_folder(path: str | os.PathLike, inputs: Inputs, out: Path) -> Path:
    """Refuse a checkpoint folder that could harm an input, or that lies in (or is) ``out``."""
    folder = Path(path)
    check_folder_spares_inputs(folder, inputs, option="--checkpoint-dir")
    where, out_where = _resolved(folder), _resolved(out)
    if where == out_where or out_where in where.parents:
        raise ValueError(
            f"--checkpoint-dir {folder} is inside --out {out}, which the run replaces "
            "as a whole; put it beside --out (e.g. OUT.checkpoint)"
        )
    return folder


def _resolved(path: Path) -> Path:
    """``path`` made absolute with every symlink followed (it need not exist)."""
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (symlinks and hard links included)."""
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist
        return False
