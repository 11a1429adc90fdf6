"""kin_topk (k = 1, cosine) against faiss-cpu IndexFlatIP in one process, for quick A/B runs.

    PYTHONPATH=. python benchmarks/topk_vs_faiss.py N [REPS]

Random N x N x 256 inputs; median of REPS calls (default 3) after one warm-up call each.
Prints faiss time / acsleuth time (>= 0.9 is the issue's target).
"""

from __future__ import annotations

import argparse
import time

import faiss
import torch

from acsleuth import ops


def _median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[reps // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="queries = keys = N")
    parser.add_argument("reps", type=int, nargs="?", default=3)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    query = torch.randn(args.n, args.dim, generator=g)
    keys = torch.randn(args.n, args.dim, generator=g)
    index = faiss.IndexFlatIP(args.dim)
    index.add(torch.nn.functional.normalize(keys, dim=1).numpy())
    query_np = torch.nn.functional.normalize(query, dim=1).numpy()
    ours = _median_time(lambda: ops.kin_topk(query, keys, k=1), args.reps)
    peer = _median_time(lambda: index.search(query_np, 1), args.reps)
    print(
        f"n={args.n}: acsleuth {ours:.2f}s faiss {peer:.2f}s ratio(faiss/acsleuth) {peer / ours:.3f}"
    )


if __name__ == "__main__":
    main()
