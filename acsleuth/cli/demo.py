"""``acsleuth demo``: the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches."""

from __future__ import annotations

import argparse

from ..demo import HELD_OUT
from . import add_common


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``demo`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo", help="the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches"
    )
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT),
                        help="cell types treated as anomalies")
    parser.add_argument("--out", default="acsleuth_demo", help="output folder")
    add_common(parser)
    parser.set_defaults(func=demo)
    return parser


def demo(args: argparse.Namespace) -> int:
    """The whole pipeline on scanpy's pbmc68k_reduced, with and without batch correction."""
    from ..demo import run_demo

    run_demo(args.out, held_out=args.held_out, seed=args.seed, device=args.device,
             epochs=args.epochs)
    return 0


__all__ = ["add_parser", "demo"]
