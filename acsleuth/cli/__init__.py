"""Command-line interface: ``acsleuth run``, ``demo`` and ``annotate`` (``python -m acsleuth``).

Each subcommand is a module of this package with ``add_parser(subparsers)`` and its handler;
:func:`build_parser` assembles them, :func:`main` runs one and turns its errors into one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from .._constants import DEFAULTS, EPOCH_PARAMS

ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    """The ``acsleuth`` parser, a subparser per subcommand module."""
    from . import annotate, demo, run

    parser = argparse.ArgumentParser(prog="acsleuth", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"acsleuth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    annotate.add_parser(sub)
    demo.add_parser(sub)
    run.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "debug", False):
        return args.func(args)
    try:
        return args.func(args)
    except ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        print(f"acsleuth {args.command}: error: {message}{notes} (--debug shows the traceback)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"acsleuth {args.command}: {interrupted(args, err)}", file=sys.stderr)
        return 130


def interrupted(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """What an interrupted command left behind, and how to go on."""
    from ..train import TrainingInterrupted

    if isinstance(err, TrainingInterrupted):
        return (f"interrupted in stage {err.stage!r} after {err.epoch} complete epoch(s); the "
                f"checkpoint in {err.folder} continues it: rerun the same command with --resume")
    message = "interrupted; the outputs were left as they were"
    note = getattr(args, "interrupted_note", None)
    return message + (note(args) if note is not None else "")


# ------------------------------------------------------------------ shared by subcommands
def add_common(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--seed``, ``--debug`` and ``--epochs``, as every subcommand takes them."""
    parser.add_argument("--device", default=DEFAULTS.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=DEFAULTS.random_state)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--epochs", type=non_negative, nargs=5, metavar=("PREPARE", "TRAIN", "SCORE", "STYLE", "SUBTYPE"),
        help="epochs of the two module I stages, the MMD predictor, the style transfer and DESC "
        f"(default: the model's, {' '.join(str(getattr(DEFAULTS, p)) for p in EPOCH_PARAMS)})",
    )


def epoch_settings(epochs: list[int] | None) -> dict[str, int]:
    """``--epochs`` as :class:`~acsleuth.ACsleuth` keyword arguments (none when not given)."""
    return dict(zip(EPOCH_PARAMS, epochs, strict=True)) if epochs else {}


def non_negative(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def refuse_existing(out: Path, overwrite: bool) -> None:
    """``--out`` must not exist unless ``--overwrite`` is given."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")


__all__ = [
    "add_common", "build_parser", "epoch_settings", "interrupted", "main",
    "non_negative", "refuse_existing",
]
