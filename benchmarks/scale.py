"""Wall time and peak memory of each pipeline stage as the target grows to atlas size.

Usage::

    PYTHONPATH=. python benchmarks/scale.py --quick   # 2,000 and 8,000 cells x 500 genes, < 1 min
    PYTHONPATH=. python benchmarks/scale.py           # 10k, 100k, 1M target cells x 2,000 genes
    PYTHONPATH=. python benchmarks/scale.py --device cuda --json scale.json
    PYTHONPATH=. python benchmarks/scale.py --sizes 10000 30000 --threads 1 --epochs 1 1 1 1

Method. For each target size N of ``--sizes`` the script writes, with
``acsleuth.datasets.write_synthetic`` (chunk by chunk, never holding the matrix), a
reference of ``min(N, --max-reference)`` normal cells and a target of N cells x ``--genes``
genes, two target batches (``batch_effect`` 0.5) and 10 % anomalies, as float32 CSR
``.h5ad`` files in ``--data-dir``; files already there from an earlier run with the same
parameters are reused (the folder name holds every parameter). Both are opened backed
(``anndata.read_h5ad(path, backed="r")``) and the pipeline runs stage by stage:

- ``fit``: ``ACsleuth(n_top_genes=genes, prepare_epochs, train_epochs, score_epochs,
  warm_epochs, ...).fit(reference)``;
- ``score``: ``model.evaluate(target, batch_key="batch")`` (the model's own sub-stage
  timers are kept in the JSON);
- ``correct``: ``model.correct(target, reference, normal=~anomaly, batch_key="batch",
  out=<h5py dataset>)`` (nearest kin, style transfer; the corrected matrix is streamed
  into a temporary HDF5 file, never held), skipped for N > ``--correct-max`` (default 100,000 on
  CPU, where the kin search costs N_T x N_R; unlimited on CUDA);
- ``subtype``: ``model.subtype(x)`` on the corrected expression of the called anomalies,
  when ``correct`` ran (``--no-subtype`` skips it).

Each stage is timed by wall clock (ending with a device sync). Before each stage the
garbage collector runs, the RSS is read as the stage's baseline and the process's RSS
high-water mark is reset (``/proc/self/clear_refs``); the stage's peak RSS is the
high-water mark after it, and its growth is that peak minus the baseline (what the stage
itself needed on top of what was already resident). Where the reset is impossible the peak
covers the whole run so far (``peak_rss_reset`` is false in the JSON). On CUDA the
allocator's peak per stage is recorded too. Cells/s counts the stage's input cells once,
whatever the epochs: reference cells for ``fit``, target cells for ``score`` and
``correct``, called anomalies for ``subtype``. The log-log slope of each stage is the
least-squares slope of log10(seconds) on log10(N) over the sizes where it ran (1 = linear;
``fit`` flattens once N exceeds ``--max-reference``). Unless ``--no-warmup``, a tiny
in-memory fit, score and correction first initialise kernels and allocators, so the
smallest size is not charged for them. Epochs default to 1 each on CPU (every epoch does
the same work, so times scale with the epochs) and to the package's defaults on CUDA.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import torch
from _common import command_line, device_name, package_default, sync, write_atomic

from acsleuth import metrics, ops
from acsleuth._resources import cpu_model, current_rss, peak_rss, reset_peak_rss
from acsleuth.datasets import synthetic, write_synthetic
from acsleuth.model import ACsleuth, resolve_device

STAGES = ("fit", "score", "correct", "subtype")
N_BATCHES = 2
ANOMALY_RATIO = 0.1
BATCH_EFFECT = 0.5
QUICK_SIZES = [2000, 8000]
QUICK_GENES = 500
WARMUP_CELLS = 256
DEFAULT_PNG = Path(__file__).resolve().parent / "scale.png"
GB = 1e9


# ---------------------------------------------------------------------- data
def dataset_paths(args: argparse.Namespace, n_target: int) -> tuple[Path, Path, int]:
    """Cached reference and target files for one size: ``(reference, target, n_reference)``."""
    n_reference = min(n_target, args.max_reference)
    name = (
        f"synthetic_r{n_reference}_t{n_target}_g{args.genes}_b{N_BATCHES}"
        f"_e{BATCH_EFFECT}_a{ANOMALY_RATIO}_s{args.seed}"
    )
    folder = args.data_dir / name
    return folder / "reference.h5ad", folder / "target.h5ad", n_reference


def ensure_data(args: argparse.Namespace, n_target: int) -> dict[str, Any]:
    """Write the size's files unless both exist; returns the paths and the writer's cost."""
    reference_path, target_path, n_reference = dataset_paths(args, n_target)
    info: dict[str, Any] = {
        "reference_path": str(reference_path),
        "target_path": str(target_path),
        "n_reference": n_reference,
        "n_target": n_target,
        "written": False,
    }
    if reference_path.is_file() and target_path.is_file():
        return info
    gc.collect()
    baseline = current_rss()
    reset_peak_rss()
    t0 = time.perf_counter()
    write_synthetic(
        reference_path,
        target_path,
        n_reference,
        n_target,
        args.genes,
        anomaly_ratio=ANOMALY_RATIO,
        n_batches=N_BATCHES,
        batch_effect=BATCH_EFFECT,
        seed=args.seed,
        overwrite=True,
        verbose=True,
    )
    info.update(
        written=True,
        write_s=time.perf_counter() - t0,
        write_peak_rss_gb=peak_rss() / GB,
        write_rss_growth_gb=(peak_rss() - baseline) / GB,
        bytes_on_disk=reference_path.stat().st_size + target_path.stat().st_size,
    )
    return info


# ---------------------------------------------------------------------- stages
def run_correct(
    model: ACsleuth,
    target: ad.AnnData,
    reference: ad.AnnData,
    normal: np.ndarray,
    timings: dict[str, float],
    sink: Path,
) -> h5py.Dataset:
    """Stages II-III: the corrected expression of every target cell, streamed chunk by chunk
    into an h5py dataset in ``sink`` (so the stage holds no dense N x G copy)."""
    handle = h5py.File(sink, "w")
    out = handle.create_dataset(
        "corrected",
        shape=(target.n_obs, len(model.genes_)),
        dtype="f4",
        chunks=(min(target.n_obs, 1024), len(model.genes_)),
    )
    return model.correct(
        target, reference, normal=normal, batch_key="batch", timings=timings, out=out
    )


def anomaly_rows(corrected: h5py.Dataset, anomaly: np.ndarray) -> np.ndarray:
    """The corrected expression of the called anomalies, the input of stage IV."""
    return corrected[np.flatnonzero(anomaly)]


def measure(
    device: torch.device, fn: Callable[[], Any]
) -> tuple[Any, dict[str, float | bool | None]]:
    """``fn()`` and its wall seconds, peak RSS, RSS growth and (CUDA) allocator peak."""
    gc.collect()
    baseline = current_rss()
    reset = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    return value, {
        "seconds": seconds,
        "peak_rss_gb": peak / GB,
        "rss_growth_gb": (peak - baseline) / GB,
        "rss_before_gb": baseline / GB,
        "peak_rss_reset": reset,
        "cuda_peak_gb": (
            torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
        ),
    }


def _model(args: argparse.Namespace, device: torch.device) -> ACsleuth:
    """The model under test: the package's defaults except epochs, genes, device and seed."""
    e_prepare, e_train, e_score, e_warm = args.epochs
    return ACsleuth(
        n_top_genes=args.genes,
        prepare_epochs=e_prepare,
        train_epochs=e_train,
        score_epochs=e_score,
        warm_epochs=e_warm,
        style_epochs=args.style_epochs,
        subtype_epochs=args.subtype_epochs,
        device=str(device),
        random_state=args.seed,
        verbose=False,
    )


def warm_up(args: argparse.Namespace, device: torch.device) -> None:
    """A tiny in-memory run of every stage: kernels, allocators and lazy imports get loaded."""
    reference, target = synthetic(
        WARMUP_CELLS, WARMUP_CELLS, args.genes, n_batches=N_BATCHES, seed=args.seed + 1
    )
    model = _model(args, device).fit(reference)
    result = model.evaluate(target, batch_key="batch")
    if not args.no_correct:
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            corrected = run_correct(
                model, target, reference, ~result.anomaly, {}, Path(tmp) / "c.h5"
            )
            if not args.no_subtype:
                model.subtype(anomaly_rows(corrected, result.anomaly))
            corrected.file.close()
    sync(device)


def run_size(args: argparse.Namespace, device: torch.device, n_target: int) -> dict[str, Any]:
    """Every stage on one target size; returns the size's record with one row per stage."""
    data = ensure_data(args, n_target)
    reference = ad.read_h5ad(data["reference_path"], backed="r")
    target = ad.read_h5ad(data["target_path"], backed="r")
    n_reference = reference.n_obs
    is_anomaly = target.obs["is_anomaly"].to_numpy(dtype=bool)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"data": data}

    def record(stage: str, cells: int, stats: dict[str, Any]) -> None:
        rows.append(
            {
                "n_target": n_target,
                "n_reference": n_reference,
                "stage": stage,
                "cells": cells,
                **stats,
                "cells_per_s": cells / stats["seconds"],
            }
        )

    model = _model(args, device)
    _, stats = measure(device, lambda: model.fit(reference))
    record("fit", n_reference, stats)
    extra["fit_timings"] = dict(model.timings_)

    result, stats = measure(device, lambda: model.evaluate(target, batch_key="batch"))
    record("score", n_target, stats)
    extra["score_timings"] = dict(result.timings)
    extra["n_called"] = int(result.anomaly.sum())
    extra["auroc"] = metrics.auroc(is_anomaly, result.score)

    if args.no_correct or (args.correct_max is not None and n_target > args.correct_max):
        extra["skipped"] = ["correct", "subtype"]
    else:
        timings: dict[str, float] = {}
        normal = ~result.anomaly
        sink = Path(tempfile.mkdtemp(dir=args.data_dir)) / "corrected.h5"
        corrected, stats = measure(
            device, lambda: run_correct(model, target, reference, normal, timings, sink)
        )
        record("correct", n_target, stats)
        extra["correct_timings"] = timings
        if args.no_subtype:
            extra["skipped"] = ["subtype"]
        else:
            x = anomaly_rows(corrected, result.anomaly)
            sub, stats = measure(device, lambda: model.subtype(x))
            record("subtype", len(x), stats)
            extra["n_subtypes"] = None if sub is None else int(sub.n_subtypes)
        corrected.file.close()
        sink.unlink()
        sink.parent.rmdir()
    reference.file.close()
    target.file.close()
    return {"n_target": n_target, "rows": rows, **extra}


def loglog_slopes(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: the least-squares slope of log10(seconds) on log10(N) and each local slope."""
    slopes = {}
    for stage in STAGES:
        points = sorted((r["n_target"], r["seconds"]) for r in rows if r["stage"] == stage)
        if len(points) < 2:
            continue
        x = np.log10([n for n, _ in points])
        y = np.log10([s for _, s in points])
        local = [
            {
                "from": points[i][0],
                "to": points[i + 1][0],
                "slope": float((y[i + 1] - y[i]) / (x[i + 1] - x[i])),
            }
            for i in range(len(points) - 1)
        ]
        slopes[stage] = {"slope": float(np.polyfit(x, y, 1)[0]), "local": local}
    return slopes


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then every size; returns the measurements."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_warmup:
        warm_up(args, device)
    sizes = []
    for n_target in args.sizes:  # progress on stderr; the report goes to stdout at the end
        sizes.append(run_size(args, device, n_target))
        print(render_rows(sizes[-1]["rows"], header=not sizes[:-1]), file=sys.stderr, flush=True)
        gc.collect()
    rows = [row for size in sizes for row in size["rows"]]
    try:
        backend = ops.backend(device)
    except Exception as err:  # a forced backend that cannot run here
        backend = f"unavailable ({err})"
    return {
        "rows": rows,
        "sizes": sizes,
        "slopes": loglog_slopes(rows),
        "genes": args.genes,
        "max_reference": args.max_reference,
        "n_batches": N_BATCHES,
        "anomaly_ratio": ANOMALY_RATIO,
        "epochs": dict(zip(("prepare", "train", "score", "warm"), args.epochs, strict=True))
        | {"style": args.style_epochs, "subtype": args.subtype_epochs},
        "correct_max": args.correct_max,
        "device": device.type,
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "threads_pinned": bool(args.threads),
        "torch": torch.__version__,
        "anndata": importlib.metadata.version("anndata"),
        "python": platform.python_version(),
        "backend": backend,
        "warmup": not args.no_warmup,
        "data_dir": str(args.data_dir),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": args.command,
    }


# ---------------------------------------------------------------------- output
def render_rows(rows: list[dict[str, Any]], *, header: bool = True) -> str:
    """The per-stage rows as a Markdown table (``header=False``: rows only)."""
    lines = (
        [
            "| target cells | reference cells | stage | seconds | cells/s | peak RSS (GB) "
            "| RSS growth (GB) |",
            "|---|---|---|---|---|---|---|",
        ]
        if header
        else []
    )
    for r in rows:
        lines.append(
            f"| {r['n_target']:,} | {r['n_reference']:,} | {r['stage']} | {r['seconds']:.2f} "
            f"| {r['cells_per_s']:,.0f} | {r['peak_rss_gb']:.2f} | {r['rss_growth_gb']:.2f} |"
        )
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    """The measurements as a Markdown header, table and slopes."""
    e = res["epochs"]
    correct_max = "unlimited" if res["correct_max"] is None else f"{res['correct_max']:,}"
    lines = [
        "# acsleuth pipeline scaling",
        "",
        f"- data: `write_synthetic`, target N cells (reference min(N, {res['max_reference']:,})) "
        f"x {res['genes']:,} genes, {res['n_batches']} target batches, "
        f"{res['anomaly_ratio']:.0%} anomalies, float32 CSR h5ad read backed",
        f"- epochs: prepare {e['prepare']}, train {e['train']}, MMD {e['score']}, warm start "
        f"{e['warm']}, style {e['style']}, subtype {e['subtype']}; correct up to N = "
        f"{correct_max}; warm-up run {'on' if res['warmup'] else 'off'}",
        f"- device: {res['device']} ({res['device_name']}); CPU {res['cpu']}, "
        f"{res['logical_cores']} logical cores, torch threads {res['threads']}"
        + (" (--threads)" if res["threads_pinned"] else " (default)"),
        f"- torch {res['torch']}, anndata {res['anndata']}, python {res['python']}, "
        f"acsleuth ops backend `{res['backend']}`",
        f"- date: {res['date']}",
        f"- command: `{res['command']}`",
        "",
        render_rows(res["rows"]),
        "",
    ]
    for size in res["sizes"]:
        data = size["data"]
        written = (
            f"written in {data['write_s']:.1f} s, writer peak RSS "
            f"{data['write_peak_rss_gb']:.2f} GB (+{data['write_rss_growth_gb']:.2f} GB), "
            f"{data['bytes_on_disk'] / GB:.2f} GB on disk"
            if data["written"]
            else "reused from the data folder"
        )
        skipped = f"; skipped: {', '.join(size['skipped'])}" if size.get("skipped") else ""
        lines.append(
            f"- N = {size['n_target']:,}: data {written}; AUROC {size['auroc']:.3f}, "
            f"{size['n_called']:,} called{skipped}"
        )
    lines += ["", "Log-log slope of seconds vs N (least squares; local slopes in brackets):", ""]
    for stage, s in res["slopes"].items():
        local = ", ".join(f"{p['from']:,}->{p['to']:,}: {p['slope']:.2f}" for p in s["local"])
        lines.append(f"- {stage}: {s['slope']:.2f} [{local}]")
    if not res["slopes"]:
        lines.append("- none: a slope needs a stage measured at two sizes or more")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    """Two log-log panels, seconds and peak RSS against N, one line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for stage in STAGES:
        rows = sorted((r for r in res["rows"] if r["stage"] == stage), key=lambda r: r["n_target"])
        if not rows:
            continue
        n = [r["n_target"] for r in rows]
        slope = res["slopes"].get(stage, {}).get("slope")
        label = stage if slope is None else f"{stage} (slope {slope:.2f})"
        axes[0].plot(n, [r["seconds"] for r in rows], "o-", label=label)
        axes[1].plot(n, [r["peak_rss_gb"] for r in rows], "o-", label=stage)
    sizes = sorted({r["n_target"] for r in res["rows"]})
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 20, 1000: no powers of ten
    two_five = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else "")
    for ax, key, ylabel in zip(
        axes, ("seconds", "peak_rss_gb"), ("wall time (s)", "peak RSS (GB)"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, labels=[f"{n:,}" for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        values = [r[key] for r in res["rows"]]
        span = max(values) / min(values)  # label minor ticks: all, 2x and 5x, or none
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(
            plain if span < 10 else two_five if span < 300 else NullFormatter()
        )
        ax.set_xlabel("target cells N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"acsleuth scaling: {res['genes']:,} genes, {res['device_name']}, "
        f"{res['threads']} torch threads",
        fontsize=10,
    )
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, png.getvalue())


# ---------------------------------------------------------------------- command line
def _limit(text: str) -> float:
    """A cell count, or ``unlimited``."""
    if text.lower() in ("unlimited", "inf", "none"):
        return math.inf
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'unlimited', got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the defaults to a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="target cells (10000 100000 1000000)")
    parser.add_argument("--genes", type=int, help="genes, all kept (2000)")
    parser.add_argument(
        "--max-reference", type=int, default=100_000, help="most reference cells (100,000)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        nargs=4,
        metavar=("PREPARE", "TRAIN", "SCORE", "WARM"),
        help="epochs of module I without / with the memory bank, of the MMD predictor and of "
        "its warm start (CPU: 1 1 1 1; CUDA: the package's defaults)",
    )
    parser.add_argument("--style-epochs", type=int, help="style-transfer epochs (CPU: 1)")
    parser.add_argument("--subtype-epochs", type=int, help="most DESC epochs (CPU: 1)")
    parser.add_argument(
        "--correct-max",
        type=_limit,
        help="largest N that runs correct and subtype, or 'unlimited' "
        "(CPU: 100000; CUDA: unlimited)",
    )
    parser.add_argument("--no-correct", action="store_true", help="skip correct and subtype")
    parser.add_argument("--no-subtype", action="store_true", help="skip subtype")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, help="torch threads (default: left alone)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "acsleuth_scale",
        help="where the synthetic h5ad files are written and reused",
    )
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    parser.add_argument(
        "--png",
        type=Path,
        help="the log-log figure (default benchmarks/scale.png; with --quick, in --data-dir)",
    )
    parser.add_argument("--no-png", action="store_true", help="draw no figure")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {' '.join(map(str, QUICK_SIZES))} x {QUICK_GENES} genes, 1 epoch each",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the tiny warm-up run")
    args = parser.parse_args(argv)

    cuda = resolve_device(args.device).type == "cuda"
    if args.quick:
        args.sizes = args.sizes or QUICK_SIZES
        args.genes = args.genes or QUICK_GENES
    args.sizes = sorted(set(args.sizes or [10_000, 100_000, 1_000_000]))
    args.genes = args.genes or 2000
    if args.epochs is None:
        names = ("prepare_epochs", "train_epochs", "score_epochs", "warm_epochs")
        args.epochs = (
            [package_default(n) for n in names] if cuda and not args.quick else [1, 1, 1, 1]
        )
    for name, parameter in (("style_epochs", "style_epochs"), ("subtype_epochs", "subtype_epochs")):
        if getattr(args, name) is None:
            setattr(args, name, package_default(parameter) if cuda and not args.quick else 1)
    if args.png is None and not args.no_png:
        args.png = args.data_dir / "scale_quick.png" if args.quick else DEFAULT_PNG
    if args.no_png:
        args.png = None
    if args.correct_max is None:  # not given: the N_T x N_R kin search is bounded on CPU only
        args.correct_max = math.inf if cuda else 100_000
    if args.correct_max == math.inf:
        args.correct_max = None  # JSON has no infinity

    if min(args.sizes) < 10 or args.genes < 2 or args.max_reference < 10:
        parser.error("need at least 10 cells per size and reference, and 2 genes")
    if min(args.epochs) < 0 or args.epochs[0] + args.epochs[1] == 0:
        parser.error("epochs must be >= 0, and module I needs at least one")
    if args.style_epochs < 0 or args.subtype_epochs < 0:
        parser.error("--style-epochs and --subtype-epochs must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    args.command = command_line(__file__, argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table (and write ``--json``, ``--png``); return the results."""
    args = parse_args(argv)
    res = run(args)
    print()
    print(render(res), flush=True)
    if args.json:
        write_atomic(args.json, json.dumps(res, indent=1) + "\n")
    if args.png:
        plot(res, args.png)
        print(f"figure: {args.png}")
    return res


if __name__ == "__main__":
    main()
