"""Prototype (issue 16, dev set): forms of the per-gene batch scale, model-free.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/detection_dev/proto_batch_scale_variants.py SEED [SEED ...]

Per two-batch dev scenario of ``eval_detection.py`` and seed, the AUROC of the reference
distance (10 folds, each batch shifted onto the reference) after dividing out each batch's
scale estimated on the first fold's axes alone, averaged over the folds' axes, shrunk by
split-half reliability (the package's ``batch_gene_scales``), and the shrunk scale clamped
below at 0, -1 or -0.5; and the strength per batch (0, 0.25, ..., 1 of the averaged scale)
whose nearest 30 % of cells lie nearest the reference.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, "benchmarks")
from eval_detection import SPLITS

from acsleuth import metrics
from acsleuth.data import prepare
from acsleuth.stages.batch_scale import batch_gene_scale, batch_gene_scales
from acsleuth.stages.neighbours import NeighbourConfig, fit_neighbours

POSITIONS = (10, 11, 12, 14, 15, 16, 17, 18)  # every two-batch dev scenario
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def divided(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.expm1(x) * torch.exp(-scale))


def distance(neighbours, x: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
    n_batches = int(codes.max()) + 1
    offsets = neighbours.batch_offsets(x, codes, n_batches)
    return neighbours.distances(x, offsets=offsets[:, codes]).mean(0)


def row(position: int, seed: int) -> str:
    scenario = SPLITS["dev"][position]
    reference, target = scenario.load(seed)
    ref = prepare(reference, name="reference")
    x_ref = torch.as_tensor(ref.rows(np.arange(ref.n_obs)))
    x = torch.as_tensor(prepare(target, genes=ref.genes).rows(np.arange(target.n_obs)))
    neighbours = fit_neighbours(lambda r: x_ref[r].numpy(), ref.n_obs, NeighbourConfig(), seed=seed)
    codes = target.obs["batch"].cat.codes.to_numpy()
    truth = target.obs["is_anomaly"].to_numpy()
    batches = [torch.from_numpy(codes == b) for b in range(2)]

    def auroc(scale: torch.Tensor | None) -> float:
        rows = x if scale is None else divided(x, scale[codes])
        return metrics.auroc(truth, distance(neighbours, rows, codes).numpy())

    def estimate(rows: torch.Tensor, folds) -> torch.Tensor:
        return torch.stack(
            [batch_gene_scale(rows, x_ref, f.mean, f.components, neighbours.k) for f in folds]
        ).mean(0)

    one_fold = torch.stack([estimate(x[b], neighbours.folds[:1]) for b in batches])
    fold_mean = torch.stack([estimate(x[b], neighbours.folds) for b in batches])
    shrunk = batch_gene_scales(neighbours, x, codes, 2, seed=seed)
    strengths = []
    for b in range(2):
        rows, one = x[batches[b]], np.zeros(int(batches[b].sum()), dtype=np.int64)
        nearest = []
        for strength in STRENGTHS:
            d = distance(neighbours, divided(rows, strength * fold_mean[b]), one)
            nearest.append(float(d[d <= torch.quantile(d, 0.3)].mean()))
        strengths.append(STRENGTHS[int(np.argmin(nearest))])
    values = {
        "shift": auroc(None),
        "one fold": auroc(one_fold),
        "fold mean": auroc(fold_mean),
        "shrunk": auroc(shrunk),
        "shrunk, >= 0": auroc(shrunk.clamp_min(0.0)),
        "shrunk, >= -1": auroc(shrunk.clamp_min(-1.0)),
        "shrunk, >= -0.5": auroc(shrunk.clamp_min(-0.5)),
        "strength by nearness": auroc(fold_mean * torch.tensor(strengths)[:, None]),
    }
    return f"{position}\t{seed}\t{scenario.label}\t" + "\t".join(
        f"{name} {value:.3f}" for name, value in values.items()
    )


if __name__ == "__main__":
    for seed in map(int, sys.argv[1:]):
        for position in POSITIONS:
            print(row(position, seed), flush=True)
