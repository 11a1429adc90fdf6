"""acsleuth's command line: find anomalous cells (run, demo), classify, annotate, explain.

Subcommands ``acsleuth run``, ``demo``, ``classify``, ``annotate`` and ``explain`` (also
``python -m acsleuth``).

Each subcommand is a module of this package with ``add_parser(subparsers)`` and its handler;
:func:`build_parser` assembles them, :func:`main` runs one and turns its errors into one line.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from .. import __version__
from .._constants import DEFAULTS, EPOCH_PARAMS, Params

ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    """The ``acsleuth`` parser, a subparser per subcommand module."""
    from . import annotate, classify, demo, explain, run

    parser = argparse.ArgumentParser(
        prog="acsleuth", description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"acsleuth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (run, demo, classify, annotate, explain):  # the order --help lists them in
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .._logging import set_verbosity

    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["acsleuth", *(sys.argv[1:] if argv is None else argv)])
    set_verbosity(verbosity(args))
    if getattr(args, "debug", False):
        return args.func(args)
    try:
        return args.func(args)
    except ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        print(
            f"acsleuth {args.command}: error: {message}{notes} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as err:
        print(f"acsleuth {args.command}: {interrupted(args, err)}", file=sys.stderr)
        return 130


def interrupted(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """What an interrupted command left behind, and how to go on."""
    from ..train import TrainingInterrupted

    if isinstance(err, TrainingInterrupted):
        return (
            f"interrupted in stage {err.stage!r} after {err.epoch} complete epoch(s); the "
            f"checkpoint in {err.folder} continues it: rerun the same command with --resume"
        )
    message = "interrupted; the outputs were left as they were"
    note = getattr(args, "interrupted_note", None)
    return message + (note(args) if note is not None else "")


# ------------------------------------------------------------------ shared by subcommands
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each option's default (unless it is None or False) and keeps the
    line breaks of the examples in the epilog."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


EPOCH_STAGES = {
    name.removesuffix("_epochs"): name
    for name in Params.__dataclass_fields__
    if name.endswith("_epochs")
}
"""``--epochs`` stage names and the :class:`~acsleuth.ACsleuth` setting each sets."""


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--seed``, ``--epochs``, ``--quiet``, ``--verbose`` and ``--debug``, as
    every subcommand takes them."""
    parser.add_argument(
        "--device",
        default=DEFAULTS.device,
        choices=["auto", "cpu", "cuda"],
        help="where to compute (auto: CUDA when there is a GPU)",
    )
    parser.add_argument(
        "--seed", type=int, help=f"random seed of training (default {DEFAULTS.random_state})"
    )
    parser.add_argument(
        "--epochs",
        nargs="+",
        metavar="STAGE=N",
        help="training epochs per stage, e.g. prepare=10,train=5 (stages: "
        f"{', '.join(f'{k} {getattr(DEFAULTS, v)}' for k, v in EPOCH_STAGES.items())}); five plain "
        "numbers set prepare, train, score, style and subtype in this order",
    )
    quiet = parser.add_mutually_exclusive_group()
    quiet.add_argument("--quiet", action="store_true", help="no progress: errors and warnings only")
    quiet.add_argument("--verbose", action="store_true", help="also log the sub-stages")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def verbosity(args: argparse.Namespace) -> int:
    """The stderr log level that ``--quiet`` / ``--verbose`` choose (INFO by default)."""
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", False) else logging.INFO


def epoch_settings(epochs: list[str] | None) -> dict[str, int]:
    """``--epochs`` as :class:`~acsleuth.ACsleuth` keyword arguments (none when not given):
    ``STAGE=N`` items (separated by commas or spaces), or five numbers in
    :data:`~acsleuth._constants.EPOCH_PARAMS` order."""
    if not epochs:
        return {}
    items = [item for value in epochs for item in value.split(",") if item]
    if all("=" not in item for item in items):
        if len(items) != len(EPOCH_PARAMS):
            raise ValueError(
                f"--epochs: {len(items)} plain numbers; give five ({', '.join(EPOCH_PARAMS)}) "
                "or STAGE=N items, e.g. --epochs prepare=10,train=5"
            )
        return {
            name: _epoch_count(name, text) for name, text in zip(EPOCH_PARAMS, items, strict=True)
        }
    settings = {}
    for item in items:
        stage, _, text = item.partition("=")
        if stage.strip() not in EPOCH_STAGES:
            raise ValueError(
                f"--epochs: unknown stage {stage!r} in {item!r}; the stages are "
                f"{', '.join(EPOCH_STAGES)}, e.g. --epochs prepare=10,train=5"
            )
        settings[EPOCH_STAGES[stage.strip()]] = _epoch_count(stage, text)
    return settings


def _epoch_count(stage: str, text: str) -> int:
    try:
        return non_negative(text)
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"--epochs {stage}: {err}") from None


def whole_number(text: str, minimum: int) -> int:
    """``text`` as a whole number >= ``minimum``, else an ``argparse.ArgumentTypeError``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def non_negative(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    return whole_number(text, 0)


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return whole_number(text, 1)


__all__ = [
    "EPOCH_STAGES",
    "HelpFormatter",
    "add_common",
    "build_parser",
    "epoch_settings",
    "interrupted",
    "main",
    "non_negative",
    "positive",
    "verbosity",
    "whole_number",
]
