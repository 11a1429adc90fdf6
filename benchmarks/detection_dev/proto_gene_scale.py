"""Prototype (issue 16, dev set): a per-gene multiplicative batch correction before the
reference distance, model-free, against the package's shift in PC space.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/detection_dev/proto_gene_scale.py SEEDS

Per two-batch dev scenario and seed: AUROC of the distance after the package's shift
(``batch_offset``), and after a per-gene scale estimated from the trimmed nearest target
cells against their reference neighbours (then the same shift), for a few pseudo-counts.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_num_threads(1)
from proto_cache import load
from proto_scenarios import DEV, P, S

from acsleuth import metrics
from acsleuth.data import prepare
from acsleuth.stages.neighbours import NeighbourConfig, fit_neighbours, nearest, shift_onto

B, MONO, NK, CD8 = "CD19+ B", "CD14+ Monocyte", "CD56+ NK", "CD8+ Cytotoxic T"
TREG, NAIVE8 = "CD4+/CD25 T Reg", "CD8+/CD45RA+ Naive Cytotoxic"
SCENARIOS = [DEV[i] for i in (10, 11, 12, 14)] + [
    P("batch", [MONO, CD8], None, 2, 2.0),
    P("batch", [B, NK], 0.1, 2, 2.0),
    S("synthetic", 3, 0.3, 2, 2.0),
    P("batch", [TREG, NAIVE8], 0.3, 2, 2.0),
]


def package_distance(neighbours, x, codes):
    scores = torch.zeros(x.shape[0])
    for batch in np.unique(codes):
        rows = torch.from_numpy(codes == batch)
        for fold in neighbours.folds:
            offset = fold.batch_offset(x[rows], neighbours.k)
            scores[rows] += fold.distances(x[rows], neighbours.k, offset=offset)
    return scores.numpy() / len(neighbours.folds)


def gene_scale(x, xr, mean, comps, k, rounds, trim, eps):
    """Per-gene log-scale of batch rows ``x`` against reference rows ``xr``."""
    s = torch.zeros(x.shape[1])
    er = torch.expm1(xr)
    qr = (xr - mean) @ comps
    ex = torch.expm1(x)
    for _ in range(rounds):
        xc = torch.log1p(ex * torch.exp(-s))
        q = (xc - mean) @ comps
        offset = shift_onto(q, qr, k)
        d, idx = nearest(q + offset, qr, k)
        near = d.mean(1) <= torch.quantile(d.mean(1), trim)
        num = (ex[near] * torch.exp(-s)).sum(0)
        den = er[idx[near]].mean(1).sum(0)
        s = s + torch.log((num + eps) / (den + eps))
    return s


def main() -> None:
    seeds = [int(v) for v in sys.argv[1:]]
    for scenario in SCENARIOS:
        for seed in seeds:
            reference, target = load(scenario, seed)
            ref = prepare(reference, name="reference")
            tgt = prepare(target, genes=ref.genes, name="target")
            x_ref = torch.as_tensor(ref.rows(np.arange(ref.n_obs))).float()
            x = torch.as_tensor(tgt.rows(np.arange(tgt.n_obs))).float()
            neighbours = fit_neighbours(
                lambda rows, x_ref=x_ref: x_ref[rows], ref.n_obs, NeighbourConfig(), seed=seed
            )
            truth = target.obs["is_anomaly"].to_numpy()
            codes = target.obs["batch"].cat.codes.to_numpy()
            mean = x_ref.mean(0)
            _, _, vt = torch.linalg.svd(x_ref - mean, full_matrices=False)
            comps = vt[:50].T
            row = [metrics.auroc(truth, package_distance(neighbours, x, codes))]
            level = torch.expm1(x_ref).mean()
            for eps_factor in (0.1, 1.0):
                for trim in (0.5, 0.3):
                    xc = x.clone()
                    for batch in np.unique(codes):
                        rows = torch.from_numpy(codes == batch)
                        s = gene_scale(x[rows], x_ref, mean, comps, neighbours.k, 3, trim,
                                       eps_factor * level * rows.sum())  # fmt: skip
                        xc[rows] = torch.log1p(torch.expm1(x[rows]) * torch.exp(-s))
                    row.append(metrics.auroc(truth, package_distance(neighbours, xc, codes)))
            print(scenario["family"], scenario.get("held"), scenario["sd"], seed,
                  " ".join(f"{v:.3f}" for v in row), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
