"""``acsleuth classify``: cell types and an out-of-distribution score for target cells (CLAMS)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._constants import SEED
from . import positive
from ._safety import check_output_folder


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify", help="classify target cells against a labelled reference, flag unknown types"
    )
    parser.add_argument("--reference", help="labelled reference cells (.h5ad, 10x folder or CSV)")
    parser.add_argument(
        "--target", required=True, help="cells to classify (.h5ad, 10x folder or CSV)"
    )
    parser.add_argument("--label-key", help="obs column of the reference's cell types")
    parser.add_argument("--out", required=True, help="output folder (refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--reject", action="store_true", help="call out-of-distribution cells 'unassigned'"
    )
    parser.add_argument("--model", help="a saved classifier folder (e.g. OUT/model): skip training")
    parser.add_argument(
        "--epochs", type=positive, help="training epochs (default: the classifier's)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"seed of the classifier (default {SEED})"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(func=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    """Train (or load) a classifier, classify ``--target``, write ``--out`` atomically: the
    annotated ``target.h5ad``, ``cells.csv``, the model and a plot. Inputs are never modified."""
    import pandas as pd

    from .. import tl
    from .._anndata.classify import KEY, keys
    from .._atomic import atomic_dir
    from ..data import read
    from ..model import CellTypeClassifier

    start = time.perf_counter()
    inputs = {"--reference": args.reference, "--target": args.target, "--model": args.model}
    out = check_output_folder(args.out, inputs, overwrite=args.overwrite)
    if args.model is not None and (args.epochs is not None or args.reference is not None):
        raise ValueError(
            "--model classifies with a saved classifier; drop --reference and --epochs"
        )
    if args.model is None and (args.reference is None or args.label_key is None):
        raise ValueError(
            "give --reference and --label-key (to train), or --model (a saved classifier)"
        )
    target = read(args.target, backed=True)
    if args.model is not None:
        model = CellTypeClassifier.load(args.model, device=args.device)
    else:
        reference = read(args.reference, backed=True)
        settings = {} if args.epochs is None else {"epochs": args.epochs}
        model = CellTypeClassifier(
            device=args.device, random_state=args.seed, verbose=not args.quiet, **settings
        ).fit(reference, label_key=args.label_key)
    annotated = target if target.isbacked else target.copy()  # a backed file opens read-only
    tl.classify(annotated, model=model, reject=args.reject)
    k = keys(KEY)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        _write_target(annotated, tmp / "target.h5ad")
        pd.DataFrame(
            {
                "type": annotated.obs[k["label"]],
                "confidence": annotated.obs[k["confidence"]],
                "ood_score": annotated.obs[k["ood_score"]],
                "ood": annotated.obs[k["ood"]],
            }
        ).to_csv(tmp / "cells.csv", index_label="cell")
        model.save(tmp / "model")
        _plot(annotated, tmp / "ood_scores.png")
    n_ood = int(annotated.obs[k["ood"]].sum())
    print(
        f"acsleuth classify: {annotated.n_obs} target cells into {len(model.classes_)} types, "
        f"{n_ood} called out of distribution; wrote {out}/ in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _write_target(adata, path: Path) -> None:
    """The annotated target as ``.h5ad``; a backed target's file is copied and only its
    annotations rewritten, so ``X`` is never loaded."""
    import shutil

    import h5py
    from anndata.io import write_elem

    if not adata.isbacked:
        adata.write_h5ad(path)
        return
    shutil.copyfile(adata.filename, path)
    with h5py.File(path, "r+") as f:
        write_elem(f, "obs", adata.obs)
        write_elem(f, "obsm", dict(adata.obsm))
        write_elem(f, "uns", dict(adata.uns))


def _plot(adata, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import pl

    fig = pl.ood_scores(adata, return_fig=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
