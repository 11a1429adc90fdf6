"""Check that a refactor left ACsleuth's results bit-identical on the CPU.

``--record DIR`` writes the demo's outputs and a few small fixed API runs (scores, calls,
subtypes, corrected expression, embeddings) into ``DIR``; ``--compare DIR`` recomputes them
and fails on the first array that is not bit-identical. Record at the old commit, compare at
the new one, on the same machine::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/check_identical.py --record /tmp/before
    git checkout NEW
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/check_identical.py --compare /tmp/before
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

import acsleuth
from acsleuth import datasets
from acsleuth.demo import run_demo

FAST = {
    "prepare_epochs": 2,
    "train_epochs": 1,
    "score_epochs": 2,
    "warm_epochs": 2,
    "style_epochs": 2,
    "subtype_epochs": 3,
    "kin_epochs": 2,
    "batch_size": 32,
    "n_memory": 50,
    "verbose": False,
    "device": "cpu",
}
CASES = {  # name: (model settings, run arguments)
    "batches": ({}, {"batch_key": "batch"}),
    "ratio_no_correction": ({}, {"anomaly_ratio": 0.2, "correct": False}),
    "learned_kin_fusion": (
        {"subtype_embedding": "fusion", "score": "scaled"},
        {"batch_key": "batch", "kin": "learned", "n_subtypes": 2},
    ),
}


def api_arrays() -> dict[str, np.ndarray]:
    """Every per-cell output of the :data:`CASES` on a small synthetic data set."""
    reference, target = datasets.synthetic(
        150, 120, 60, n_anomaly_types=2, anomaly_ratio=0.3, n_batches=2, seed=3
    )
    arrays = {}
    for name, (settings, run) in CASES.items():
        model = acsleuth.ACsleuth(**{**FAST, **settings}).fit(reference)
        out = model.run(reference, target.copy(), **run)
        arrays[f"{name}/score"] = out.obs["acsleuth_score"].to_numpy()
        arrays[f"{name}/anomaly"] = out.obs["acsleuth_anomaly"].to_numpy(bool)
        arrays[f"{name}/subtype"] = out.obs["acsleuth_subtype"].cat.codes.to_numpy()
        arrays[f"{name}/embedding"] = out.obsm["X_acsleuth"]
        arrays[f"{name}/subtype_embedding"] = out.obsm["X_acsleuth_subtype"]
        for column, values in out.obsm["acsleuth_scores"].items():
            arrays[f"{name}/scores/{column}"] = values.to_numpy()
        for slot in (out.layers, out.obsm):
            if "acsleuth_corrected" in slot:
                arrays[f"{name}/corrected"] = np.asarray(slot["acsleuth_corrected"])
        arrays[f"{name}/threshold"] = np.asarray(out.uns["acsleuth"]["threshold"])
    return arrays


def demo_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The demo's cells.csv, metrics.csv (without seconds) and target.h5ad's outputs."""
    run_demo(folder, device="cpu", echo=lambda *_: None)
    arrays = {}
    cells = pd.read_csv(folder / "cells.csv")
    for column in cells:
        arrays[f"demo/cells/{column}"] = cells[column].astype(str).to_numpy()
    metrics = pd.read_csv(folder / "metrics.csv").drop(columns="seconds")
    for column in metrics:
        arrays[f"demo/metrics/{column}"] = metrics[column].astype(str).to_numpy()
    target = ad.read_h5ad(folder / "target.h5ad")
    arrays["demo/corrected"] = np.asarray(target.layers["acsleuth_corrected"])
    arrays["demo/scores"] = target.obsm["acsleuth_scores"].to_numpy()
    arrays["demo/embedding"] = target.obsm["X_acsleuth"]
    arrays["demo/subtype_embedding"] = target.obsm["X_acsleuth_subtype"]
    return arrays


def compute(work: Path) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    return {**api_arrays(), **demo_arrays(work / "demo")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path, help="folder to write the reference outputs into")
    group.add_argument("--compare", type=Path, help="folder written by --record")
    args = parser.parse_args(argv)
    folder = args.record or args.compare
    with tempfile.TemporaryDirectory() as work:
        arrays = compute(Path(work))
    if args.record:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "outputs.npz", **arrays)
        print(f"recorded {len(arrays)} arrays in {folder / 'outputs.npz'}")
        return 0
    with np.load(folder / "outputs.npz", allow_pickle=True) as saved:
        before = {k: saved[k] for k in saved.files}
    if set(before) != set(arrays):
        print(
            f"different outputs: only before {sorted(set(before) - set(arrays))}, only now "
            f"{sorted(set(arrays) - set(before))}"
        )
        return 1
    different = [
        k
        for k in sorted(arrays)
        if not np.array_equal(before[k], arrays[k], equal_nan=before[k].dtype.kind == "f")
    ]
    for k in different:
        print(f"NOT identical: {k}")
    print(f"{len(arrays) - len(different)} of {len(arrays)} arrays bit-identical")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
