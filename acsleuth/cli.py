"""Command-line interface: ``acsleuth run`` and ``acsleuth demo`` (``python -m acsleuth``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__

DEMO_MARKER = ".acsleuth_demo"


def _demo_folder(out: Path) -> Path:
    """The demo's output folder; an existing folder the demo did not make is refused."""
    if out.exists() and not (out / DEMO_MARKER).exists():
        raise SystemExit(
            f"acsleuth demo: {out} exists and was not written by the demo; "
            "choose another folder with --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).touch()
    return out


def _demo(args: argparse.Namespace) -> int:
    """Held-out cell type on scanpy's bundled pbmc68k_reduced: fit, score, evaluate, write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from . import ACsleuth, datasets, metrics, ops, pl, tl
    from ._atomic import atomic_path

    start = time.perf_counter()
    out = _demo_folder(Path(args.out))
    reference, target = datasets.pbmc_holdout(args.held_out, reference_fraction=0.5, seed=args.seed)
    truth = target.obs["is_anomaly"].to_numpy()
    print(
        f"acsleuth {__version__} | ops backend {ops.backend()} | pbmc68k_reduced, held out "
        f"{args.held_out!r}: {reference.n_obs} reference cells, {target.n_obs} target cells "
        f"({truth.sum()} anomalous)"
    )
    names = ("prepare_epochs", "train_epochs", "score_epochs")
    epochs = dict(zip(names, args.epochs, strict=True)) if args.epochs else {}
    model = ACsleuth(**epochs, random_state=args.seed, device=args.device).fit(reference)
    tl.score_anomalies(target, model)
    table = target.obsm["acsleuth_scores"]
    rows = {name: metrics.detection_report(truth, table[name].to_numpy()) for name in table}
    report = pd.DataFrame(rows).T[["auroc", "ap", "f1_at_ratio"]]
    report.columns = ["AUROC", "AP", "F1 (top-n at the true ratio)"]
    print(report.round(3).to_string())
    called = metrics.f1(truth, target.obs["acsleuth_anomaly"].to_numpy())
    print(f"default score {model.params['score']!r}: {int(target.obs['acsleuth_anomaly'].sum())} "
          f"cells called anomalous, F1 of the calls {called:.3f}")

    with atomic_path(out / "target.h5ad", overwrite=True) as tmp:
        target.write_h5ad(tmp)
    cells = pd.DataFrame(
        {"cell_type": target.obs["cell_type"], "is_anomaly": truth,
         "score": target.obs["acsleuth_score"], "anomaly": target.obs["acsleuth_anomaly"]}
    ).join(table.add_prefix("score_"))
    with atomic_path(out / "cells.csv", overwrite=True) as tmp:
        cells.to_csv(tmp, index_label="cell")
    target.obs["truth"] = pd.Categorical(
        ["anomalous (" + args.held_out + ")" if t else "normal" for t in truth]
    )
    fig, axes = plt.subplots(1, len(table.columns), figsize=(4 * len(table.columns), 3.4))
    for ax, name in zip(axes, table.columns, strict=True):
        pl.scores(target, score=name, groupby="truth", ax=ax, show=False)
        ax.set_title(f"{name}: AUROC {rows[name]['auroc']:.3f}")
    fig.tight_layout()
    with atomic_path(out / "scores.png", overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {out}/target.h5ad, {out}/cells.csv, {out}/scores.png")
    print(f"runtime {time.perf_counter() - start:.1f} s")
    return 0


def _run(args: argparse.Namespace) -> int:
    """The whole pipeline on files: never modifies the inputs, writes ``--out`` atomically."""
    import pandas as pd

    from . import ACsleuth
    from ._atomic import atomic_dir
    from .data import read

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if args.model is None and args.reference is None:
        raise ValueError("give --reference (to train) or --model (a saved model)")
    target = read(args.target)
    reference = read(args.reference) if args.reference is not None else None
    n_subtypes = args.n_subtypes if args.n_subtypes == "auto" else int(args.n_subtypes)
    if args.model is not None:
        model = ACsleuth.load(args.model, device=args.device)
    else:
        model = ACsleuth(device=args.device, random_state=args.seed, verbose=not args.quiet)
    if reference is not None:
        model.run(reference, target, batch_key=args.batch_key, anomaly_ratio=args.anomaly_ratio,
                  n_subtypes=n_subtypes)
    else:  # a saved model without a reference: detect and subtype, no batch correction
        model.run(None, target, anomaly_ratio=args.anomaly_ratio, n_subtypes=n_subtypes,
                  correct=False)
    truth_key = None
    if args.label_key is not None:
        truth_key = _label_truth(target, reference, args.label_key)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        target.write_h5ad(tmp / "target.h5ad")
        pd.DataFrame({
            "score": target.obs["acsleuth_score"], "anomaly": target.obs["acsleuth_anomaly"],
            "subtype": target.obs["acsleuth_subtype"],
        }).to_csv(tmp / "cells.csv", index_label="cell")
        model.save(tmp / "model")
        _write_report(target, tmp, args.label_key, truth_key)
    n_anomalies = int(target.obs["acsleuth_anomaly"].sum())
    print(f"acsleuth run: {target.n_obs} target cells, {n_anomalies} called anomalous, "
          f"{target.uns['acsleuth'].get('n_subtypes', 0)} subtypes; wrote {out}/ "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _label_truth(target, reference, label_key: str) -> str | None:
    """Mark target cells whose label the reference lacks as true anomalies (for the report)."""
    if label_key not in target.obs:
        raise KeyError(f"--label-key {label_key!r} is not an obs column of the target")
    if reference is None or label_key not in reference.obs:
        return None
    seen = set(reference.obs[label_key].astype(str))
    target.obs["acsleuth_true_anomaly"] = ~target.obs[label_key].astype(str).isin(seen).to_numpy()
    return "acsleuth_true_anomaly"


def _write_report(target, folder: Path, label_key: str | None, truth_key: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from .report import write_report

    write_report(target, folder, label_key=label_key, truth_key=truth_key)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acsleuth", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acsleuth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="detect a held-out cell type in scanpy's bundled pbmc68k_reduced"
    )
    demo.add_argument("--held-out", default="CD19+ B", help="cell type treated as the anomaly")
    demo.add_argument("--seed", type=int, default=2024)
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--out", default="acsleuth_demo", help="output folder")
    demo.add_argument(
        "--epochs", type=int, nargs=3, metavar=("PREPARE", "TRAIN", "SCORE"),
        help="epochs of the two module I stages and of the MMD predictor (default: the "
        "model's, 50 20 5)",
    )
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="detect, batch-correct and subtype anomalous target cells")
    run.add_argument("--reference", help="normal reference cells (.h5ad, 10x folder or CSV)")
    run.add_argument("--target", required=True, help="cells to screen (.h5ad, 10x folder or CSV)")
    run.add_argument("--out", required=True, help="output folder (refused if it exists)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    run.add_argument("--batch-key", help="obs column of the target's batches")
    run.add_argument("--anomaly-ratio", type=float, help="expected fraction of anomalies")
    run.add_argument("--n-subtypes", default="auto", help="'auto' or a number (default auto)")
    run.add_argument("--label-key", help="obs column of known cell types (report only)")
    run.add_argument("--model", help="a saved model folder (e.g. OUT/model): skip training")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--seed", type=int, default=2024)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo" or getattr(args, "debug", False):
        return args.func(args)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"acsleuth {args.command}: error: {message} (--debug shows the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
