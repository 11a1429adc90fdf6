"""Command-line interface: ``acsleuth demo``."""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__


def _demo(args: argparse.Namespace) -> int:
    """Kin matching and MMD group separation on scanpy's bundled PBMC data, with the fused ops."""
    import numpy as np
    import scanpy as sc
    import torch

    from . import ops

    start = time.perf_counter()
    adata = sc.datasets.pbmc68k_reduced()
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(adata.n_obs)
    ref, tgt = order[: adata.n_obs // 2], order[adata.n_obs // 2 :]
    emb = torch.as_tensor(adata.obsm["X_pca"], dtype=torch.float32)
    print(f"acsleuth {__version__} | backend {ops.backend()} | {adata.n_obs} PBMCs, "
          f"{len(ref)} reference / {len(tgt)} target")

    _, kin = ops.kin_topk(emb[tgt], emb[ref], k=1, metric="cosine")
    transferred = labels[ref][kin[:, 0].numpy()]
    print(f"kin matching (cosine, PCA): label agreement {np.mean(transferred == labels[tgt]):.3f}")

    expr = torch.as_tensor(adata.raw.to_adata().X.toarray() if hasattr(adata.raw.X, "toarray")
                           else adata.raw.X, dtype=torch.float32)
    is_b = torch.as_tensor(labels == args.held_out, dtype=torch.float32)
    shuffled = is_b[torch.randperm(len(is_b), generator=torch.Generator().manual_seed(args.seed))]
    for kernel in ("linear", "gaussian"):
        true_mmd = -ops.gamma_mmd_loss(expr, is_b, kernel=kernel).item()
        null_mmd = -ops.gamma_mmd_loss(expr, shuffled, kernel=kernel).item()
        print(f"gamma_c MMD ({kernel}): '{args.held_out}' vs rest {true_mmd:.4g} | "
              f"random split of the same size {null_mmd:.4g}")
    print(f"runtime {time.perf_counter() - start:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acsleuth", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acsleuth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the ops on scanpy's bundled pbmc68k_reduced")
    demo.add_argument("--held-out", default="CD19+ B", help="cell type treated as the anomaly")
    demo.add_argument("--seed", type=int, default=2024)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
