"""CLAMS prediction as the target grows to atlas size: wall time and peak memory per size.

Usage::

    PYTHONPATH=. python benchmarks/scale_classify.py --quick          # 2,000 and 8,000 cells
    PYTHONPATH=. python benchmarks/scale_classify.py                  # 10k, 100k, 1M target cells
    PYTHONPATH=. python benchmarks/scale_classify.py --json out.json --threads 1

Method. For each target size N the files of ``benchmarks/scale.py`` are written (or reused)
with ``acsleuth.datasets.write_synthetic``: a labelled reference of ``--max-reference``
normal cells and a target of N cells x ``--genes`` genes (6 known types, 2 planted unknown
types, 10 % of the target), two target batches. Both are opened backed
(``anndata.read_h5ad(path, backed="r")``). ``fit``: ``CellTypeClassifier`` on the reference
(``--epochs`` JEM epochs, the package's other defaults). ``predict``: ``model.classify`` of
the backed target, which streams ``eval_batch_size`` cells at a time. Each stage is measured
as in ``scale.py`` (wall seconds, peak RSS and its growth over the stage's baseline, the
high-water mark reset before the stage). The outputs kept per cell (probabilities, scores,
labels) are O(N) by nature, ~4 (K + 3) bytes and one pointer per cell; the claim checked is
that the rest of ``predict``'s memory does not grow with N. Quality per size: accuracy on the
known types' cells and the AUROC of the OOD score for the planted unknown types.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch
from _common import command_line, write_atomic
from scale import QUICK_GENES, QUICK_SIZES, ensure_data, measure

from acsleuth import CellTypeClassifier, metrics
from acsleuth._resources import cpu_model

LABEL = "cell_type"


def run_size(args: argparse.Namespace, n_target: int) -> dict[str, Any]:
    """Write (or reuse) one size's files, fit on the reference and classify the target."""
    info = ensure_data(args, n_target)
    reference = ad.read_h5ad(info["reference_path"], backed="r")
    target = ad.read_h5ad(info["target_path"], backed="r")
    model = CellTypeClassifier(
        device="cpu", random_state=args.seed, verbose=False, epochs=args.epochs
    )
    device = torch.device("cpu")
    _, fit = measure(device, lambda: model.fit(reference, label_key=LABEL))
    result, predict = measure(device, lambda: model.classify(target))
    unknown = target.obs["is_anomaly"].to_numpy().astype(bool)
    truth = target.obs[LABEL].astype(str).to_numpy()
    accuracy = float((result.labels[~unknown] == truth[~unknown]).mean())
    return {
        "n_reference": info["n_reference"],
        "n_target": n_target,
        "fit": fit,
        "predict": predict,
        "predict_cells_per_s": n_target / predict["seconds"],
        "outputs_gb": sum(
            a.nbytes for a in (result.proba, result.confidence, result.ood_score, result.energy)
        )
        / 1e9,
        "accuracy": accuracy,
        "ood_auroc": metrics.auroc(unknown, result.ood_score),
    }


def render(rows: list[dict[str, Any]]) -> str:
    """A markdown table, one row per size."""
    lines = [
        "| target cells | fit s | predict s | predict cells/s | predict RSS growth GB "
        "| outputs GB | peak RSS GB | accuracy | OOD AUROC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["predict"]
        lines.append(
            f"| {r['n_target']:,} | {r['fit']['seconds']:.1f} | {p['seconds']:.1f} "
            f"| {r['predict_cells_per_s']:,.0f} | {p['rss_growth_gb']:.3f} "
            f"| {r['outputs_gb']:.3f} | {p['peak_rss_gb']:.2f} | {r['accuracy']:.3f} "
            f"| {r['ood_auroc']:.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="target cells (10000 100000 1000000)")
    parser.add_argument("--genes", type=int, help="genes (1000)")
    parser.add_argument("--max-reference", type=int, default=5000, help="reference cells")
    parser.add_argument("--epochs", type=int, default=5, help="JEM epochs of the fit")
    parser.add_argument("--threads", type=int, help="torch threads (default: left alone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "acsleuth_scale"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    parser.add_argument("--quick", action="store_true", help="sizes 2,000 and 8,000 x 500 genes")
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else [10**4, 10**5, 10**6])))
    args.genes = args.genes or (QUICK_GENES if args.quick else 1000)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"command: {command_line(__file__, argv)}\nmachine: {cpu_model()}, torch {torch.__version__}"
    )
    rows = []
    for n in args.sizes:
        rows.append(run_size(args, n))
        print(json.dumps(rows[-1]), flush=True)
    print(render(rows))
    growth = [r["predict"]["rss_growth_gb"] - r["outputs_gb"] for r in rows]
    print(f"predict RSS growth minus outputs, GB: {np.round(growth, 3).tolist()}")
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
