"""``acsleuth demo``: the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches."""

from __future__ import annotations

import argparse

from .._constants import DEFAULTS
from ..demo import HELD_OUT
from . import HelpFormatter, add_common, epoch_settings


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``demo`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches",
        description="Hold out cell types of scanpy's pbmc68k_reduced, fit on half of the other "
        "cells and screen a target of the rest in two batches, with and without batch correction.",
        formatter_class=HelpFormatter,
        epilog="examples:\n  acsleuth demo\n  acsleuth demo --epochs prepare=10,train=5 --quiet\n"
        "  acsleuth demo --held-out 'CD14+ Monocyte' --out demo_monocytes",
    )
    parser.add_argument(
        "--held-out", nargs="+", default=list(HELD_OUT), help="cell types treated as anomalies"
    )
    parser.add_argument("--out", default="acsleuth_demo", help="output folder")
    add_common(parser)
    parser.set_defaults(func=demo)
    return parser


def demo(args: argparse.Namespace) -> int:
    """The whole pipeline on scanpy's pbmc68k_reduced, with and without batch correction."""
    from ..demo import run_demo

    seed = DEFAULTS.random_state if args.seed is None else args.seed
    run_demo(
        args.out,
        held_out=args.held_out,
        seed=seed,
        device=args.device,
        epochs=epoch_settings(args.epochs),
    )
    return 0


__all__ = ["add_parser", "demo"]
