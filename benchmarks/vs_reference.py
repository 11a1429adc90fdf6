"""acsleuth against the reference library (``sleuth``), in the same run, at equal epochs.

Usage::

    PYTHONPATH=. python benchmarks/vs_reference.py --reference-lib ../shared/reference/ACSleuth
    PYTHONPATH=. python benchmarks/vs_reference.py --reference-lib PATH --sets pbmc 1000 \\
        --epochs 1 1 2 --repeats 1                                   # smoke run
    PYTHONPATH=. python benchmarks/vs_reference.py --reference-lib PATH --flops  # + GFLOP
    PYTHONPATH=. python benchmarks/vs_reference.py --reference-lib PATH --device cuda  # a GPU

Every run is its own process (``benchmarks/_reference_runs.py``), so that its peak memory is
its own; the runs of one data set go in turns (reference as shipped, compat, reference
without DataLoader workers, ACsleuth; repeated ``--repeats`` times), so that a change in
the machine's load hits every side. All sides get the same data (dense, log-normalised, all
genes), epochs, seed and ``--threads`` torch threads.

- ``reference``: the library at ``--reference-lib`` (put on ``sys.path``; seeded before each
  constructor; its generator wrapped to return ``x_hat`` for ``AdaptModel``), as shipped
  (4 DataLoader workers, pinned memory) and with its DataLoaders in-process.
- ``compat``: ``acsleuth.compat.sleuth``, the same calls.
- ``acsleuth``: :class:`acsleuth.ACsleuth` (``fit``, ``evaluate``, ``correct``, ``subtype``;
  its default score and subtype embedding).

Data sets: ``pbmc`` (pbmc68k_reduced, held-out CD19+ B cells, 765 genes) and synthetic sets
of N reference + N target cells (``acsleuth.datasets.synthetic``, 10 % anomalies of two
types). The reference's scorer builds about 18 dense N x N float32 matrices (forward and
backward); a run whose estimate passes ``--max-gb`` is not started, and the table gives the
target size at which it would pass 24 GB. ``--pipeline N`` adds the whole pipeline on a
two-batch synthetic set (the reference's style block takes one batch: it runs with one).
``--flops`` adds one run per side (DataLoaders in-process) under ``torch.profiler``, whose
table gives each stage's GFLOP of matrix products: at equal epochs, the work a speed-up
must come from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scanpy as sc

from acsleuth.datasets import pbmc_holdout, synthetic

RUNS = Path(__file__).with_name("_reference_runs.py")
SCORER_MATRICES = 18  # dense N x N float32 matrices alive in the reference scorer's step
MACHINE_GB = 24.0


def scorer_gb(n_target: int) -> float:
    """The reference scorer's estimated memory for ``n_target`` cells, in GB."""
    return SCORER_MATRICES * 4 * n_target**2 / 2**30


def ceiling(gb: float) -> int:
    """The most target cells whose reference scorer fits ``gb``."""
    return int(math.sqrt(gb * 2**30 / (SCORER_MATRICES * 4)))


def dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def dense_log(adata: Any) -> np.ndarray:
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return dense(adata.X)


def write_set(name: str, genes: int, n_batches: int, folder: str) -> tuple[str, int, int]:
    """Write one data set for the child runs; returns its path and sizes."""
    if name == "pbmc":
        ref, tgt = pbmc_holdout("CD19+ B", seed=0)
        x_ref, x_tgt = (dense(a.X) for a in (ref, tgt))
    else:
        n = int(name)
        ref, tgt = synthetic(n, n, genes, n_batches=n_batches, seed=0)
        x_ref, x_tgt = dense_log(ref.copy()), dense_log(tgt.copy())
    path = os.path.join(folder, f"{name}_{n_batches}.npz")
    np.savez(
        path,
        ref=x_ref,
        tgt=x_tgt,
        is_anomaly=tgt.obs["is_anomaly"].to_numpy().astype(bool),
        cell_type=tgt.obs["cell_type"].astype(str).to_numpy().astype("U"),
        batch=tgt.obs["batch"].astype(str).to_numpy().astype("U"),
    )
    return path, x_ref.shape[0], x_tgt.shape[0]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one side in its own process; its stages, quality and the load around it."""
    before = load_average()
    proc = subprocess.run(
        [sys.executable, str(RUNS), json.dumps(spec)], capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:200]}", "load": before}
    out = json.loads(lines[-1][len("RESULT ") :])
    out["load"] = f"{before} -> {load_average()}"
    return out


SIDES = [  # (label, side, DataLoader workers) in the order the runs take turns
    ("reference, 4 workers (shipped)", "reference", 4),
    ("acsleuth.compat.sleuth", "compat", 0),
    ("reference, workers off", "reference", 0),
    ("acsleuth.ACsleuth", "acsleuth", 0),
]


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(title: str, runs: dict[str, list[dict]], n_target: int, stages: list[str]) -> str:
    """Markdown: per side and stage the median seconds (range), cells/s, speed-up, peak GB."""
    baselines = {k: v for k, v in runs.items() if k.startswith("reference")}
    lines = [
        f"\n**{title}**\n",
        "| run | "
        + " | ".join(f"{s} s" for s in stages)
        + " | all stages s | target cells/s | speed-up vs shipped | vs workers off "
        "| peak GB | AUROC | F1 | ARI | load (1/5/15 min) |",
        "|---" * (len(stages) + 10) + "|",
    ]

    def total(run: dict, names: list[str]) -> float | None:
        got = [run["stages"].get(s, {}).get("seconds") for s in names]
        return None if None in got else sum(got)

    def median_total(label: str, names: list[str]) -> float | None:
        values = [total(r, names) for r in baselines.get(label, []) if "stages" in r]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    for label, results in runs.items():
        ok = [r for r in results if "stages" in r]
        if not ok:
            lines.append(f"| {label} | {results[0].get('error', 'not run')} |")
            continue
        cells = [
            spread([r["stages"][s]["seconds"] for r in ok]) if s in ok[0]["stages"] else "-"
            for s in stages
        ]
        main = stages
        totals = [t for t in (total(r, main) for r in ok) if t is not None]
        mid = statistics.median(totals) if totals else None
        ratios = []
        for base in ("reference, 4 workers (shipped)", "reference, workers off"):
            ref = median_total(base, stages)
            ratios.append(f"{ref / mid:.2f}x" if ref and mid else "-")
        q = ok[-1]["quality"]
        peak = max(s["peak_gb"] for s in ok[-1]["stages"].values())
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {spread(totals) if totals else '-'} | "
            + (f"{n_target / mid:.0f}" if mid else "-")
            + f" | {ratios[0]} | {ratios[1]} | {peak:.2f} | "
            + " | ".join(f"{q[k]:.3f}" if k in q else "-" for k in ("auroc", "f1", "ari"))
            + f" | {'; '.join(r['load'] for r in results)} |"
        )
    return "\n".join(lines)


def matmul_gflops(threads: int, device: str = "cpu", repeats: int = 50) -> float:
    """This machine's float32 matrix-product rate at ``threads`` torch threads (or on the GPU),
    in GFLOP/s: a 128 x 2,000 by 2,000 x 512 product, module I's largest (the best of
    ``repeats``)."""
    import torch  # the parent process needs torch for this measurement only

    torch.set_num_threads(threads)
    a, b = torch.randn(128, 2000, device=device), torch.randn(2000, 512, device=device)
    best = math.inf
    for _ in range(repeats + 1):  # the first call warms the device up
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 128 * 2000 * 512 / best / 1e9


def flop_table(title: str, runs: dict[str, dict], stages: list[str]) -> str:
    """Markdown: per side the GFLOP of each stage's matrix products and their sum."""
    lines = [
        f"\n**{title}: GFLOP of matrix products (torch.profiler, one run per side)**\n",
        "| run | " + " | ".join(f"{s} GFLOP" for s in stages) + " | all stages |",
        "|---" * (len(stages) + 2) + "|",
    ]
    for label, run in runs.items():
        if "stages" not in run:
            lines.append(f"| {label} | {run.get('error', 'not run')} |")
            continue
        got = [run["stages"].get(s, {}).get("gflop") for s in stages]
        cells = ["-" if g is None else f"{g:.0f}" for g in got]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sum(g or 0 for g in got):.0f} |")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-lib", required=True, help="folder holding the sleuth package")
    parser.add_argument("--sets", nargs="+", default=["pbmc", "5000", "20000"])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument(
        "--epochs", type=int, nargs=3, default=(10, 5, 10), metavar=("PREPARE", "TRAIN", "SCORE")
    )
    parser.add_argument("--pipeline", type=int, default=2000, help="cells per side; 0: none")
    parser.add_argument("--adapt-epochs", type=int, default=5)
    parser.add_argument("--subtype-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-gb", type=float, default=6.0, help="no reference run above this")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where every side trains"
    )
    parser.add_argument(
        "--flops",
        action="store_true",
        help="after the timed rounds, one run per side under torch.profiler: GFLOP per stage",
    )
    return parser.parse_args()


def main() -> None:
    args = parse()
    lib = str(Path(args.reference_lib).resolve())
    if not (Path(lib) / "sleuth" / "__init__.py").is_file():
        sys.exit(f"--reference-lib {lib} holds no sleuth/__init__.py; pass the ACSleuth folder")
    print("command: PYTHONPATH=. python " + shlex.join(sys.argv))
    if args.flops:
        print(
            f"float32 matrix products here: {matmul_gflops(args.threads):.0f} GFLOP/s", flush=True
        )
    jobs = [(name, "detect", 1) for name in args.sets]
    if args.pipeline:
        jobs.append((str(args.pipeline), "pipeline", 2))
    with tempfile.TemporaryDirectory() as folder:
        for name, task, n_batches in jobs:
            path, n_ref, n_tgt = write_set(name, args.genes, n_batches, folder)
            too_big = scorer_gb(n_tgt) > args.max_gb
            runs: dict[str, list[dict]] = {}
            stages = ["detect", "predict"] + (["adapt", "subtype"] if task == "pipeline" else [])
            title = (
                f"{name}: {n_ref} reference + {n_tgt} target cells, {task}"
                f"{', 2 target batches' if n_batches > 1 else ''}; reference scorer needs "
                f"~{scorer_gb(n_tgt):.1f} GB"
                + (" (over --max-gb: not run)" if too_big else "")
                + f"; it passes {MACHINE_GB:.0f} GB above {ceiling(MACHINE_GB)} target cells"
            )

            base = dict(  # every child run of this data set and task; each adds its side
                data=path,
                task=task,
                threads=args.threads,
                epochs=list(args.epochs),
                adapt_epochs=args.adapt_epochs,
                subtype_epochs=args.subtype_epochs,
                n_types=2,
                seed=args.seed,
                reference_lib=lib,
                device=args.device,
            )
            for repeat in range(args.repeats):
                for label, side, workers in SIDES:
                    if side == "reference" and too_big:
                        runs[label] = [{"error": "not run: its scorer needs more than --max-gb"}]
                        continue
                    runs.setdefault(label, []).append(
                        child({**base, "side": side, "workers": workers})
                    )
                    print(label, json.dumps(runs[label][-1]), flush=True)
                # after every round, so that an interrupted run still leaves its tables
                print(table(f"{title}, {repeat + 1} round(s)", runs, n_tgt, stages), flush=True)
            if args.flops:
                counted = {
                    label: child({**base, "side": side, "workers": workers, "flops": True})
                    for label, side, workers in SIDES
                    if workers == 0 and not (side == "reference" and too_big)
                }
                print(flop_table(title, counted, stages), flush=True)


if __name__ == "__main__":
    main()
