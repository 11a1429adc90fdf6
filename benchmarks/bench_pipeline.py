"""Cells per second of each ACsleuth training stage and of scoring, on synthetic data.

Usage::

    PYTHONPATH=. python benchmarks/bench_pipeline.py                      # 20,000 x 2,000, CPU
    PYTHONPATH=. python benchmarks/bench_pipeline.py --threads 1 --json pipeline.json
    PYTHONPATH=. python benchmarks/bench_pipeline.py --device cuda --epochs 5 5 5
    PYTHONPATH=. python benchmarks/bench_pipeline.py --quick              # ~1,000 cells, smoke run

Method. ``acsleuth.datasets.synthetic(n_reference=cells, n_target=cells, n_genes=genes)``
builds the data (not timed). Unless ``--no-warmup``, a tiny fit + evaluate on 256 cells
with the same genes first initialises kernels, allocators and the CUDA context. Then one
``ACsleuth(...).fit(reference)`` and one ``evaluate(target)`` run with the package's
defaults except the epochs, ``n_top_genes = genes`` (every gene kept), device and seed; the
per-stage seconds are the model's own timers (``model.timings_`` and
``ScoreResult.timings``). Cells/s is cells x epochs / seconds: "prepare" and "train" (module
I without / with the memory bank) count ``cells x prepare_epochs`` and ``cells x
train_epochs`` reference cells (each step also makes ``critic_steps`` = 2 critic updates;
the loader drops the last incomplete batch of 128); the MMD predictor's warm start and
gamma-MMD epochs count ``cells x warm_epochs`` and ``cells x score_epochs`` target cells;
the one-pass stages count their cells once ("predict" is the MMD stage's remainder: model
set-up and the logits of every cell). Every epoch does the same work, so few epochs suffice
(default ``--epochs 1 1 1 --warm-epochs 1``); the first epoch of "prepare" also builds the
loader's resident copy of the data. The end-to-end row is the wall time of ``evaluate``
(ending with a device sync) for the epochs used. Stages with 0 epochs are left out. Peak
RSS is the process high-water mark, reset after data generation where
``/proc/self/clear_refs`` allows it (else it covers the whole run); on CUDA the allocator's
peak is reported too.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from _common import command_line, device_name, package_default, sync, write_atomic

from acsleuth import ops
from acsleuth._resources import cpu_model, current_rss, peak_rss, reset_peak_rss
from acsleuth.datasets import synthetic
from acsleuth.model import ACsleuth, resolve_device

QUICK_CELLS = 1000
WARMUP_CELLS = 256


def _rate(cells: int, seconds: float) -> float:
    return cells / seconds if seconds > 0 else float("nan")


def _model(
    args: argparse.Namespace, device: torch.device, epochs: list[int], warm_epochs: int
) -> ACsleuth:
    """The model under test: the package's defaults except epochs, genes, device and seed."""
    return ACsleuth(
        prepare_epochs=epochs[0],
        train_epochs=epochs[1],
        score_epochs=epochs[2],
        warm_epochs=warm_epochs,
        n_top_genes=args.genes,
        device=str(device),
        random_state=args.seed,
        verbose=False,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the data, fit and score once; return the measurements."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    e_prep, e_train, e_score = args.epochs
    e_warm = args.warm_epochs

    t0 = time.perf_counter()
    reference, target = synthetic(
        n_reference=args.cells, n_target=args.cells, n_genes=args.genes, seed=args.seed
    )
    generate_s = time.perf_counter() - t0
    n_ref, n_tgt = reference.n_obs, target.n_obs

    if not args.no_warmup:
        small_ref, small_tgt = synthetic(WARMUP_CELLS, WARMUP_CELLS, args.genes, seed=args.seed + 1)
        _model(args, device, [1, 1, 1], min(e_warm, 1)).fit(small_ref).evaluate(small_tgt)
        del small_ref, small_tgt
        sync(device)

    rss_data = current_rss()
    peak_reset = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model = _model(args, device, [e_prep, e_train, e_score], e_warm)
    t0 = time.perf_counter()
    model.fit(reference)
    sync(device)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = model.evaluate(target)
    sync(device)
    score_s = time.perf_counter() - t0

    fit_t, score_t = model.timings_, result.timings
    warm_s = score_t.get("mmd score > mmd warm start", 0.0)
    mmd_s = score_t["mmd score > mmd train"]  # a sub-stage is keyed by its path
    predict_s = score_t["mmd score"] - warm_s - mmd_s
    stages = [  # (phase, stage, cells, epochs, seconds)
        ("fit", "prepare data (load, HVG)", n_ref, 1, fit_t["prepare data"]),
        ("fit", "module I: prepare (no memory)", n_ref, e_prep, fit_t["module I > prepare"]),
        ("fit", "module I: train (memory bank)", n_ref, e_train, fit_t["module I > train"]),
        ("fit", "reference residuals", n_ref, 1, fit_t["reference residuals"]),
        ("score", "prepare target", n_tgt, 1, score_t["prepare target"]),
        ("score", "reconstruct + chunk scores", n_tgt, 1, score_t["reconstruct"]),
        ("score", "mmd predictor: warm start (BCE)", n_tgt, e_warm, warm_s),
        ("score", "mmd predictor: gamma-MMD epochs", n_tgt, e_score, mmd_s),
        ("score", "mmd predictor: predict (+ setup)", n_tgt, 1, predict_s),
        ("score", "score end to end (evaluate)", n_tgt, 1, score_s),
    ]
    rows = [
        {
            "phase": phase,
            "stage": stage,
            "cells": cells,
            "epochs": epochs,
            "seconds": seconds,
            "cells_per_s": _rate(cells * epochs, seconds),
        }
        for phase, stage, cells, epochs, seconds in stages
        if epochs > 0
    ]
    try:
        backend = ops.backend(device)
    except Exception as err:  # a forced backend that cannot run here
        backend = f"unavailable ({err})"
    return {
        "rows": rows,
        "cells": args.cells,
        "genes": args.genes,
        "epochs": list(args.epochs),
        "warm_epochs": e_warm,
        "scorer": {
            k: model.params[k]
            for k in ("kernel", "gamma", "score_batch_size", "anchor", "batch_size")
        },
        "device": device.type,
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "threads_pinned": bool(args.threads),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backend": backend,
        "backend_env": os.environ.get("ACSLEUTH_BACKEND"),
        "warmup": not args.no_warmup,
        "generate_s": generate_s,
        "fit_s": fit_s,
        "score_s": score_s,
        "rss_after_data_bytes": rss_data,
        "peak_rss_bytes": peak_rss(),
        "peak_rss_reset_after_data": peak_reset,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else None,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": args.command,
    }


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def render(res: dict[str, Any]) -> str:
    """The measurements as a Markdown header and table."""
    e_prep, e_train, e_score = res["epochs"]
    sc = res["scorer"]
    peak = _mib(res["peak_rss_bytes"]) + (
        " (reset after data generation)" if res["peak_rss_reset_after_data"] else " (whole run)"
    )
    memory = f"RSS after data {_mib(res['rss_after_data_bytes'])}, peak RSS {peak}"
    if res["cuda_peak_bytes"] is not None:
        memory += f", CUDA peak allocated {_mib(res['cuda_peak_bytes'])}"
    backend = f"`{res['backend']}`" + (
        f" (ACSLEUTH_BACKEND={res['backend_env']})" if res["backend_env"] else ""
    )
    lines = [
        "# acsleuth pipeline throughput",
        "",
        f"- data: `synthetic(n_reference={res['cells']:,}, n_target={res['cells']:,}, "
        f"n_genes={res['genes']:,})`, all genes kept; generated in {res['generate_s']:.1f} s",
        f"- epochs: prepare {e_prep}, train {e_train}, MMD warm start {res['warm_epochs']}, "
        f"MMD {e_score}; module I batch {sc['batch_size']}; MMD predictor: kernel "
        f"{sc['kernel']}, gamma {sc['gamma']}, batch {sc['score_batch_size'] or 'all cells'}, "
        f"anchors {'on' if sc['anchor'] else 'off'}; warm-up run {'on' if res['warmup'] else 'off'}",
        f"- device: {res['device']} ({res['device_name']}); CPU {res['cpu']}, "
        f"{res['logical_cores']} logical cores, torch threads {res['threads']}"
        + (" (--threads)" if res["threads_pinned"] else " (default)"),
        f"- torch {res['torch']}, python {res['python']}, acsleuth ops backend {backend}",
        f"- fit {res['fit_s']:.1f} s, evaluate {res['score_s']:.1f} s; {memory}",
        f"- date: {res['date']}",
        f"- command: `{res['command']}`",
        "",
        "| phase | stage | cells x epochs | seconds | cells/s |",
        "|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        count = f"{row['cells']:,}" + (f" x {row['epochs']}" if row["epochs"] != 1 else "")
        lines.append(
            f"| {row['phase']} | {row['stage']} | {count} | {row['seconds']:.2f} "
            f"| {row['cells_per_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the defaults to a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, help="reference and target cells each (20,000)")
    parser.add_argument("--genes", type=int, default=2000, help="genes (all kept)")
    parser.add_argument(
        "--epochs",
        type=int,
        nargs=3,
        default=[1, 1, 1],
        metavar=("PREPARE", "TRAIN", "SCORE"),
        help="epochs of module I without / with the memory bank, and of the MMD predictor",
    )
    parser.add_argument(
        "--warm-epochs",
        type=int,
        default=1,
        help=f"warm-start epochs of the MMD predictor (package default: {package_default('warm_epochs')})",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, help="torch threads (default: left alone)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CELLS:,} cells, 1 epoch each")
    parser.add_argument("--no-warmup", action="store_true", help="skip the tiny warm-up run")
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    if args.cells is None:
        args.cells = QUICK_CELLS if args.quick else 20_000
    if args.quick:
        args.epochs, args.warm_epochs = [1, 1, 1], 1
    if args.cells < 4 or args.genes < 2:
        parser.error("need at least 4 cells and 2 genes")
    if min(args.epochs) < 0 or args.warm_epochs < 0 or args.epochs[0] + args.epochs[1] == 0:
        parser.error("epochs must be >= 0, and module I needs at least one")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    args.command = command_line(__file__, argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table (and write ``--json``); return the measurements."""
    args = parse_args(argv)
    res = run(args)
    print(render(res), flush=True)
    if args.json:
        write_atomic(args.json, json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
