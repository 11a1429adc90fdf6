"""``acsleuth explain``: signed gene panels of the groups of an ``.h5ad`` file (ACE, docs/method.md §8.3)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from ._safety import check_output_folder


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``explain`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "explain", help="explain each group of cells with a small, signed gene panel (ACE)"
    )
    parser.add_argument("--input", required=True, help="cells (.h5ad); never modified")
    parser.add_argument("--groupby", required=True, help="obs column of the groups to explain")
    parser.add_argument("--out", required=True, help="output folder (refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--embedding", default="whitened", help="'whitened' (default), 'pca' or an obsm key"
    )
    parser.add_argument("--mode", default="one_vs_rest", choices=["one_vs_rest", "one_vs_one"])
    parser.add_argument("--reference", help="the group cells move to with --mode one_vs_one")
    parser.add_argument("--n-genes", type=int, default=50, help="genes kept per group (default 50)")
    matrix = parser.add_mutually_exclusive_group()
    matrix.add_argument("--layer", help="read layers[LAYER] instead of .raw / X")
    matrix.add_argument("--no-raw", action="store_true", help="read X even when .raw is present")
    matrix.add_argument(
        "--use-raw", action="store_true", help="read .raw (refused when there is none)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(func=explain)
    return parser


def explain(args: argparse.Namespace) -> int:
    """Run ACE on ``--input`` and write ``panels.csv``, ``summary.csv`` and ``panels.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from .. import pl, tl
    from .._anndata.explain import explain_key
    from .._atomic import atomic_dir
    from ..data import read
    from ..stages.explain import ExplainConfig

    start = time.perf_counter()
    out = check_output_folder(args.out, {"--input": args.input}, overwrite=args.overwrite)
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"--input {args.input} is not a file; pass an .h5ad file")
    adata = read(args.input)
    if args.groupby not in adata.obs:
        raise KeyError(
            f"--groupby {args.groupby!r} is not an obs column of {args.input} "
            f"(columns: {list(adata.obs.columns)})"
        )
    if args.use_raw and adata.raw is None:
        raise ValueError(
            f"--use-raw: --input {args.input} has no .raw; drop --use-raw to read X, or pass --layer"
        )
    config = replace(ExplainConfig(), seed=args.seed)
    result = tl.explain_groups(
        adata,
        groupby=args.groupby,
        embedding=args.embedding,
        mode=args.mode,
        reference=args.reference,
        n_genes=args.n_genes,
        layer=args.layer,
        use_raw=False if args.no_raw else (True if args.use_raw else None),
        config=config,
        copy=True,
    )
    uns = result.uns[explain_key("acsleuth")]
    groups = list(uns["names"].dtype.names)
    panels = pd.concat(
        [
            pd.DataFrame(
                {
                    "group": g,
                    "rank": range(1, len(uns["names"][g]) + 1),
                    "gene": uns["names"][g],
                    "score": uns["scores"][g],
                    "direction": uns["direction"][g],
                }
            )
            for g in groups
        ]
    )
    summary = pd.DataFrame(
        {"flipped": uns["flipped"], "mean_l1": uns["mean_l1"], "n_cells": uns["n_cells"]}
    )
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        panels.to_csv(tmp / "panels.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index_label="group")
        fig = pl.explain_panels(result, n_genes=min(10, args.n_genes), return_fig=True)
        fig.savefig(tmp / "panels.png", dpi=120)
    print(
        f"acsleuth explain: {len(groups)} groups of obs[{args.groupby!r}] explained; wrote {out}/ "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


__all__ = ["add_parser", "explain"]
