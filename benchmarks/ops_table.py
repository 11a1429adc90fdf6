"""Time acsleuth's fused ops against their baselines and print a Markdown table.

Usage::

    PYTHONPATH=. python benchmarks/ops_table.py --quick            # small sizes, ~minutes
    PYTHONPATH=. python benchmarks/ops_table.py                     # the issue's target sizes
    PYTHONPATH=. python benchmarks/ops_table.py --skip-huge --out ops_table.md
    PYTHONPATH=. python benchmarks/ops_table.py --device cuda       # GPU, adds the CUDA cases
    PYTHONPATH=. python benchmarks/ops_table.py --list              # case ids
    PYTHONPATH=. python benchmarks/ops_table.py --cases pair_gauss,memattn

Method. Every (case, implementation) pair runs in a fresh Python process (this script
re-invoked with ``--worker``), because the RSS high-water mark is process-wide and never
decreases. The worker builds the inputs, records its RSS, resets the high-water mark
(``/proc/self/clear_refs``), runs the call once or more as warm-up, then times
``--repeats`` calls with ``time.perf_counter`` (fewer when one call is long: at most
``--budget`` seconds of repeats, and at least one) and reports the median. Calls that
alone exceed the budget are measured once, cold: their start-up cost is negligible next
to their length. "Peak extra" is the high-water RSS minus the RSS after the inputs were
built (on CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation after setup).
On CUDA every timed call ends with ``torch.cuda.synchronize()``. Thread counts are left
at torch's and faiss's defaults. Nothing is asserted: targets are reported as met/missed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import (
    MMD_RATIO,
    chunked_torch_topk,
    dense_mmd_loss,
    dense_pair_form,
    device_name,
    faiss_cpu_topk,
    keops_pair_form,
    set_threads,
    sync,
    write_atomic,
)

from acsleuth._resources import cpu_model, current_rss, peak_rss, reset_peak_rss

ACS = "acsleuth"

# --------------------------------------------------------------------------- cases


@dataclass
class Target:
    """A target for one row: its text and a check on (acsleuth result, peer result)."""

    text: str
    check: Callable[[dict, dict | None], bool]


@dataclass
class Case:
    id: str
    title: str
    size: str
    setup: Callable[[torch.device], dict]
    impls: dict[str, Callable[[dict], Callable[[], object]]]
    flop: float | None = None  # per call, for GFLOP/s
    targets: dict[str | None, Target] = field(default_factory=dict)  # keyed by peer name
    huge: bool = False
    reference_only: bool = False  # a throughput reference, not an acsleuth op


def _gen(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _randn(device, seed, *shape):
    return torch.randn(*shape, device=device, generator=_gen(device, seed))


def _timed_call(device, fn):
    def call():
        out = fn()
        sync(device)
        return out

    return call


# ---- kin_topk


def _topk_setup(n_q, n_k, d):
    def setup(device):
        return {"query": _randn(device, 1, n_q, d), "keys": _randn(device, 2, n_k, d)}

    return setup


def _topk_acsleuth(k):
    def make(inp):
        from acsleuth.ops import kin_topk

        q, keys = inp["query"], inp["keys"]
        return lambda: kin_topk(q, keys, k=k, metric="cosine")

    return make


def _topk_chunked_torch(k):
    def make(inp):
        q, keys = inp["query"], inp["keys"]
        return lambda: chunked_torch_topk(q, keys, k)

    return make


class Skip(Exception):
    """An implementation that cannot run here; the message is the reason."""


def _topk_faiss(k):
    def make(inp):
        try:
            import faiss
        except ImportError as err:
            raise Skip("faiss is not installed (pip install faiss-cpu)") from err
        q, keys = inp["query"], inp["keys"]
        if q.is_cuda:
            if not hasattr(faiss, "GpuIndexFlatIP"):
                raise Skip("this faiss build has no GPU index; CPU faiss vs GPU is not a peer")
            import faiss.contrib.torch_utils  # lets faiss take torch tensors

            qn = torch.nn.functional.normalize(q, dim=1).contiguous()
            kn = torch.nn.functional.normalize(keys, dim=1).contiguous()
            res = faiss.StandardGpuResources()
            inp["faiss_res"] = res

            def run_gpu():
                index = faiss.GpuIndexFlatIP(res, kn.shape[1])
                index.add(kn)
                return index.search(qn, k)

            return run_gpu
        return faiss_cpu_topk(q, keys, k)

    return make


def _topk_case(cid, n_q, n_k, d, k, *, faiss=True, targets=None, title=None):
    impls = {ACS: _topk_acsleuth(k)}
    if faiss:
        impls["faiss IndexFlatIP"] = _topk_faiss(k)
    impls["chunked torch mm+topk"] = _topk_chunked_torch(k)
    return Case(
        id=cid,
        title=title or f"kin_topk cosine k={k}",
        size=f"{n_q:,}x{n_k:,}x{d}",
        setup=_topk_setup(n_q, n_k, d),
        impls=impls,
        flop=2.0 * n_q * n_k * d,
        targets=targets or {},
    )


# ---- gamma_mmd_loss (linear)


def _mmd_setup(n, g):
    def setup(device):
        delta = _randn(device, 8, n, g)
        p = torch.rand(n, device=device, generator=_gen(device, 9))
        return {"delta": delta, "p": p.requires_grad_(True)}

    return setup


def _mmd_acsleuth(inp):
    from acsleuth.ops import gamma_mmd_loss

    delta, p = inp["delta"], inp["p"]

    def run():
        loss = gamma_mmd_loss(delta, p, ratio=MMD_RATIO, kernel="linear")
        return torch.autograd.grad(loss, p)

    return run


def _mmd_dense(inp):
    delta, p = inp["delta"], inp["p"]

    def run():
        loss = dense_mmd_loss(delta, p)
        return torch.autograd.grad(loss, p)

    return run


# ---- Gaussian pair form


def _pair_setup(n, g):
    def setup(device):
        from acsleuth.ops import default_bandwidths

        x = _randn(device, 3, n, g)
        phi = _randn(device, 4, n, 2)
        return {"x": x, "phi": phi, "bandwidths": default_bandwidths(x)}

    return setup


def _pair_acsleuth(inp):
    from acsleuth.ops import gaussian_pair_form

    x, phi, bw = inp["x"], inp["phi"], inp["bandwidths"]
    return lambda: gaussian_pair_form(x, phi, bw)


def _pair_dense(inp):
    x, phi, bw = inp["x"], inp["phi"], inp["bandwidths"]
    return lambda: dense_pair_form(x, phi, bw)


def _pair_keops(inp):
    try:
        import pykeops.torch  # noqa: F401  (the peer needs it)
    except ImportError as err:
        raise Skip("pykeops is not installed (optional peer)") from err
    x, phi, bw = inp["x"], inp["phi"], inp["bandwidths"]
    return lambda: keops_pair_form(x, phi, bw)


# ---- memory attention


def _memattn_setup(b, m, p):
    def setup(device):
        z = torch.nn.functional.normalize(_randn(device, 5, b, p), dim=1)
        memory = torch.nn.functional.normalize(_randn(device, 6, m, p), dim=1)
        return {
            "z": z.requires_grad_(True),
            "memory": memory.requires_grad_(True),
            "grad_out": _randn(device, 7, b, p),
        }

    return setup


def _memattn(fused: bool):
    def make(inp):
        from acsleuth.ops import _reference, memory_attention

        z, memory, grad_out = inp["z"], inp["memory"], inp["grad_out"]

        def run():
            if fused:
                out = memory_attention(z, memory, temperature=0.05, shrink=0.01)
            else:
                out = _reference.memory_attention(z, memory, 0.05, 0.01)
            return torch.autograd.grad(out, (z, memory), grad_out)

        return run

    return make


# ---- FP32 matmul reference throughput


def _mm_setup(m, k, n):
    def setup(device):
        return {"a": _randn(device, 10, m, k), "b": _randn(device, 11, k, n)}

    return setup


def _mm(inp):
    a, b = inp["a"], inp["b"]
    return lambda: torch.mm(a, b)


# ---- the case list


def _ratio_at_least(x):
    return lambda acs, peer: peer["median_s"] / acs["median_s"] >= x


def build_cases(quick: bool, device: str) -> list[Case]:
    cuda = device == "cuda"
    if quick:
        s = {
            "topk_a": (4000, 4000, 256),
            "topk_b": (8000, 8000, 256),
            "mmd_large": (100_000, 500),
            "mmd_dense": (2000, 500),
            "pair": (2000, 256),
            "pair_huge": (8000, 256),
            "memattn": (1024, 512, 256),
            "topk_mem": (10_000, 10_000, 64),
            "mm_k": (2048, 256, 2048),
            "mm_sq": (1024, 1024, 1024),
            "topk_cuda": (20_000, 20_000, 256),
            "memattn_cuda": (8192, 512, 256),
        }
    else:
        s = {
            "topk_a": (20_000, 20_000, 256),
            "topk_b": (100_000, 100_000, 256),
            "mmd_large": (1_000_000, 2000),
            "mmd_dense": (20_000, 2000),
            "pair": (20_000, 256),
            "pair_huge": (200_000, 256),
            "memattn": (4096, 512, 256),
            "topk_mem": (50_000, 50_000, 64),
            "mm_k": (8192, 256, 8192),
            "mm_sq": (4096, 4096, 4096),
            "topk_cuda": (200_000, 200_000, 256),
            "memattn_cuda": (65_536, 512, 256),
        }
    if cuda:  # the GPU gets the bigger matmuls
        s["mm_k"] = (32_768, 256, 32_768) if not quick else (8192, 256, 8192)
        s["mm_sq"] = (8192, 8192, 8192) if not quick else (4096, 4096, 4096)

    faiss_target = {"faiss IndexFlatIP": Target(">= 90% of faiss throughput", _ratio_at_least(0.9))}
    cases = [
        _topk_case("topk_k1_a", *s["topk_a"], 1, targets=faiss_target),
        _topk_case("topk_k1_b", *s["topk_b"], 1, targets=faiss_target),
        Case(
            id="mmd_linear_large",
            title="gamma_mmd_loss linear, loss + d/dp",
            size="N={:,} G={:,}".format(*s["mmd_large"]),
            setup=_mmd_setup(*s["mmd_large"]),
            impls={ACS: _mmd_acsleuth},
            targets={None: Target("< 2 s", lambda acs, _: acs["median_s"] < 2.0)},
        ),
        Case(
            id="mmd_linear_dense",
            title="gamma_mmd_loss linear, loss + d/dp",
            size="N={:,} G={:,}".format(*s["mmd_dense"]),
            setup=_mmd_setup(*s["mmd_dense"]),
            impls={ACS: _mmd_acsleuth, "dense reference": _mmd_dense},
        ),
        Case(
            id="pair_gauss",
            title="gaussian_pair_form fwd, 3 bw, r=2",
            size="N={:,} G={}".format(*s["pair"]),
            setup=_pair_setup(*s["pair"]),
            impls={ACS: _pair_acsleuth, "dense torch (cdist)": _pair_dense, "pykeops": _pair_keops},
            targets={"dense torch (cdist)": Target("at least as fast", _ratio_at_least(1.0))},
        ),
        Case(
            id="pair_gauss_huge",
            title="gaussian_pair_form fwd, 3 bw, r=2",
            size="N={:,} G={}".format(*s["pair_huge"]),
            setup=_pair_setup(*s["pair_huge"]),
            impls={ACS: _pair_acsleuth},
            huge=True,
        ),
        Case(
            id="memattn",
            title="memory_attention fwd+bwd",
            size="B={:,} M={} p={}".format(*s["memattn"]),
            setup=_memattn_setup(*s["memattn"]),
            impls={ACS: _memattn(True), "unfused torch": _memattn(False)},
            targets={"unfused torch": Target("no slower", _ratio_at_least(1.0))},
        ),
        _topk_case(
            "topk_k64_mem",
            *s["topk_mem"],
            64,
            title="kin_topk cosine k=64 (memory)",
            targets={
                None: Target(
                    "peak extra < 200 MB",
                    lambda acs, _: (
                        acs.get("peak_extra_bytes") is not None and acs["peak_extra_bytes"] < 200e6
                    ),
                )
            },
        ),
    ]
    if cuda:
        cases += [
            _topk_case("topk_k1_cuda", *s["topk_cuda"], 1, title="kin_topk cosine k=1 (GPU)"),
            Case(
                id="memattn_cuda",
                title="memory_attention fwd+bwd (GPU)",
                size="B={:,} M={} p={}".format(*s["memattn_cuda"]),
                setup=_memattn_setup(*s["memattn_cuda"]),
                impls={ACS: _memattn(True), "unfused torch": _memattn(False)},
                targets={"unfused torch": Target("no slower", _ratio_at_least(1.0))},
            ),
        ]
    for sid, label in (("mm_k", "torch.mm FP32, K = d"), ("mm_sq", "torch.mm FP32, square")):
        m, k, n = s[sid]
        cases.append(
            Case(
                id=sid,
                title=label,
                size=f"{m:,}x{k:,} @ {k:,}x{n:,}",
                setup=_mm_setup(m, k, n),
                impls={"torch.mm": _mm},
                flop=2.0 * m * k * n,
                reference_only=True,
            )
        )
    return cases


# --------------------------------------------------------------------------- worker


def run_worker(args) -> dict:
    case_id, impl = args.worker
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.threads:
        set_threads(args.threads)
    case = {c.id: c for c in build_cases(args.quick, args.device)}[case_id]
    result: dict = {"case": case_id, "impl": impl}
    torch.manual_seed(0)
    inputs = case.setup(device)
    try:
        fn = _timed_call(device, case.impls[impl](inputs))
    except Skip as why:
        return {**result, "skipped": str(why)}
    gc.collect()
    sync(device)
    rss_base = current_rss()
    reset_ok = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        dev_base = torch.cuda.memory_allocated(device)

    # Warm-up: at least one call, up to 3 or 1 s of calls.
    warm = []
    while len(warm) < 3:
        t0 = time.perf_counter()
        out = fn()
        warm.append(time.perf_counter() - t0)
        del out
        if sum(warm) > 1.0:
            break
    if warm[0] >= args.budget:
        times, cold = warm[:1], True
    else:
        per_call = min(warm)
        reps = max(1, min(args.repeats, int(args.budget / max(per_call, 1e-9))))
        times, cold = [], False
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            del out
    result.update(
        median_s=statistics.median(times), min_s=min(times), reps=len(times), cold=cold, times=times
    )
    if device.type == "cuda":
        result["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - dev_base
        result["memory_kind"] = "GPU (torch allocator)"
        if impl.startswith("faiss"):
            result["peak_extra_bytes"] = None  # faiss allocates outside torch's allocator
    else:
        result["peak_extra_bytes"] = max(0, peak_rss() - rss_base)
        result["memory_kind"] = "RSS" if reset_ok else "RSS (upper bound: includes setup peak)"
    return result


# --------------------------------------------------------------------------- parent


def _launch(args, case: Case, impl: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case.id, impl]
    cmd += ["--device", args.device, "--repeats", str(args.repeats), "--budget", str(args.budget)]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"case": case.id, "impl": impl, "error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}" + (
            " (out of memory?)" if proc.returncode == -9 else ""
        )
    else:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        why = f"exit {proc.returncode}: {tail}"
    return {"case": case.id, "impl": impl, "error": why}


def _fmt_time(r: dict | None) -> str:
    if r is None:
        return "—"
    if "skipped" in r:
        return "skipped"
    if "error" in r:
        return "failed"
    t = r["median_s"]
    text = f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"
    return text + (" ¹" if r.get("cold") else "")


def _fmt_mem(r: dict | None) -> str:
    if r is None or "median_s" not in r or r.get("peak_extra_bytes") is None:
        return "—"
    return f"{r['peak_extra_bytes'] / 2**20:,.0f} MiB"


def _fmt_gflops(case: Case, r: dict | None) -> str:
    if case.flop is None or r is None or "median_s" not in r:
        return "—"
    return f"{case.flop / r['median_s'] / 1e9:,.1f}"


def _ok(r: dict | None) -> bool:
    return r is not None and "median_s" in r


def render(args, cases: list[Case], results: dict, command: str) -> str:
    from acsleuth.ops import backend

    try:
        acs_backend = backend(args.device)
    except Exception as err:
        acs_backend = f"unavailable ({err})"
    header = [
        "# acsleuth fused ops: timings",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, torch threads "
        f"{args.threads or torch.get_num_threads()}"
        + (" (--threads)" if args.threads else " (default)")
        + f", device {args.device} ({device_name(torch.device(args.device))})",
        f"- torch {torch.__version__}, python {platform.python_version()}, acsleuth backend "
        f"`{acs_backend}`"
        + (
            f" (ACSLEUTH_BACKEND={os.environ['ACSLEUTH_BACKEND']})"
            if os.environ.get("ACSLEUTH_BACKEND")
            else ""
        ),
        f"- date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- method: median of up to {args.repeats} timed calls after warm-up, each "
        "(case, implementation) in a fresh process; ratio = peer time / acsleuth time "
        "(> 1: acsleuth faster); peak extra = high-water memory minus memory after setup",
        "",
        "| case | size | peer | acsleuth | peer time | ratio | acsleuth GFLOP/s | peer GFLOP/s "
        "| acsleuth peak extra | peer peak extra | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows, notes, refs = [], [], []
    for case in cases:
        if case.reference_only:
            r = results.get((case.id, "torch.mm"))
            refs.append((case, r))
            continue
        acs = results.get((case.id, ACS))
        peers = [p for p in case.impls if p != ACS] or [None]
        for peer in peers:
            pr = results.get((case.id, peer)) if peer else None
            ratio = "—"
            if _ok(acs) and _ok(pr):
                ratio = f"{pr['median_s'] / acs['median_s']:.2f}"
            target = case.targets.get(peer)
            if target is None and peer == peers[0]:
                target = case.targets.get(None)  # a target on acsleuth alone: first row
            tcell = ""
            if target is not None:
                met = None
                alone = target is case.targets.get(None)
                if _ok(acs) and (alone or _ok(pr)):
                    met = target.check(acs, pr)
                tcell = target.text + ("" if met is None else (" ✓" if met else " ✗ missed"))
            rows.append(
                f"| {case.title} | {case.size} | {peer or '—'} | {_fmt_time(acs)} | {_fmt_time(pr)} "
                f"| {ratio} | {_fmt_gflops(case, acs)} | {_fmt_gflops(case, pr) if peer else '—'} "
                f"| {_fmt_mem(acs)} | {_fmt_mem(pr) if peer else '—'} | {tcell} |"
            )
        for impl in case.impls:
            r = results.get((case.id, impl))
            if r and "skipped" in r:
                notes.append(f"- {case.id} / {impl}: skipped: {r['skipped']}")
            elif r and "error" in r:
                notes.append(f"- {case.id} / {impl}: failed: {r['error']}")
    out = header + rows
    if refs:
        out += [
            "",
            "FP32 matmul reference on the same device:",
            "",
            "| matmul | shape | time | GFLOP/s |",
            "|---|---|---|---|",
        ]
        for case, r in refs:
            out.append(f"| {case.title} | {case.size} | {_fmt_time(r)} | {_fmt_gflops(case, r)} |")
        best = max((case.flop / r["median_s"] for case, r in refs if _ok(r)), default=None)
        if best:
            for case in cases:
                acs = results.get((case.id, ACS))
                if case.id.startswith("topk") and _ok(acs):
                    rate = case.flop / acs["median_s"]
                    notes.append(
                        f"- {case.id}: kin_topk at {rate / 1e9:,.1f} GFLOP/s = "
                        f"{100 * rate / best:.0f}% of the best measured FP32 torch.mm ({best / 1e9:,.1f} GFLOP/s)"
                    )
    mem_kinds = {r.get("memory_kind") for r in results.values() if r.get("memory_kind")}
    notes.append(f"- memory measured as: {', '.join(sorted(mem_kinds)) or 'n/a'}")
    if any(r.get("cold") for r in results.values()):
        notes.append(
            f"- ¹ one cold call: a single call took longer than --budget ({args.budget:g} s)"
        )
    notes.append(
        "- kin_topk GFLOP/s counts 2·Nq·Nk·d; faiss and torch peers get L2-normalised inputs"
    )
    if args.skip_huge:
        notes.append(
            "- --skip-huge: "
            + ", ".join(c.id for c in build_cases(args.quick, args.device) if c.huge)
            + " not run"
        )
    out += ["", "Notes:", "", *notes, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (a few minutes on 2 cores)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--skip-huge", action="store_true", help="skip the Gaussian pair form at N=200,000"
    )
    parser.add_argument("--cases", help="comma-separated case ids to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement (max)")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timed calls per measurement; fewer repeats when calls are long",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per measurement process"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="set torch's and faiss's thread counts (default: leave their defaults)",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="also write the raw measurements as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(args)), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")

    cases = build_cases(args.quick, args.device)
    if args.list:
        for c in cases:
            print(
                f"{c.id:18} {c.title} [{c.size}]: {', '.join(c.impls)}"
                + (" (huge)" if c.huge else "")
            )
        return 0
    if args.cases:
        wanted = {w.strip() for w in args.cases.split(",") if w.strip()}
        unknown = wanted - {c.id for c in cases}
        if unknown:
            parser.error(f"unknown case ids: {', '.join(sorted(unknown))} (see --list)")
        cases = [c for c in cases if c.id in wanted]
    if args.skip_huge:
        cases = [c for c in cases if not c.huge]

    env_prefix = " ".join(
        f"{k}={shlex.quote(os.environ[k])}"
        for k in ("PYTHONPATH", "ACSLEUTH_BACKEND")
        if os.environ.get(k)
    )
    command = (
        (env_prefix + " " if env_prefix else "")
        + "python "
        + " ".join(
            shlex.quote(a)
            for a in [os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)]
        )
    )
    jobs = [(c, impl) for c in cases for impl in c.impls]
    results: dict = {}
    for n, (case, impl) in enumerate(jobs, 1):
        print(
            f"[{n}/{len(jobs)}] {case.id} [{case.size}] {impl} ...",
            end=" ",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.perf_counter()
        r = _launch(args, case, impl)
        results[(case.id, impl)] = r
        status = r.get("skipped") or r.get("error") or f"median {_fmt_time(r)}, {_fmt_mem(r)} extra"
        print(f"{status} ({time.perf_counter() - t0:.0f} s wall)", file=sys.stderr, flush=True)

    text = render(args, cases, results, command)
    print(text)
    if args.out:
        write_atomic(args.out, text)
    if args.json:
        write_atomic(args.json, json.dumps([results[k] for k in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
