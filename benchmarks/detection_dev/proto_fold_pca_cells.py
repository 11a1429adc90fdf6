"""Prototype (issue 21): fold PCAs on every pool cell against a sample of 1,000 (or 500).

    PYTHONPATH=. python benchmarks/detection_dev/proto_fold_pca_cells.py

For three synthetic references (2,000 cells x 2,000 genes; 3,000 x 2,000 with a two-batch
target; 2,000 x 1,000), fits the reference index with ``pca_cells`` 20,000 (every pool cell),
1,000 and 500 (`fold_pca_cells` the same) and prints its fit seconds (one thread), the AUROC of the unshifted distance on
the target and the count of anomalies without a ratio.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from acsleuth import datasets, metrics
from acsleuth.data import prepare
from acsleuth.stages.neighbours import NeighbourConfig, count_anomalies, fit_neighbours

SETS = ((2000, 2000, 2000, 1), (3000, 2000, 2000, 2), (2000, 2000, 1000, 1))


def main() -> None:
    torch.set_num_threads(1)
    for seed, (n_reference, n_target, n_genes, n_batches) in enumerate(SETS):
        reference, target = datasets.synthetic(
            n_reference,
            n_target,
            n_genes,
            n_anomaly_types=2,
            anomaly_ratio=0.1,
            n_batches=n_batches,
            seed=seed,
        )
        ref = prepare(reference, name="reference")
        tgt = prepare(target, genes=ref.genes, name="target")
        x_ref = ref.rows(np.arange(ref.n_obs))
        x = torch.as_tensor(tgt.rows(np.arange(tgt.n_obs)))
        truth = target.obs["is_anomaly"].to_numpy()
        for cap in (20_000, 1_000, 500):
            start = time.perf_counter()
            index = fit_neighbours(
                lambda rows: x_ref[rows],
                ref.n_obs,
                NeighbourConfig(pca_cells=cap, fold_pca_cells=cap),
                seed=0,
            )
            seconds = time.perf_counter() - start
            distances = index.distances(x)
            auroc = metrics.auroc(truth, distances.mean(0).numpy())
            count = count_anomalies(distances, index)
            print(
                f"{n_reference} x {n_genes}, {n_batches} batch(es), pca_cells {cap}: fit "
                f"{seconds:.2f} s, AUROC {auroc:.4f}, count {count} (true {truth.sum()})",
                flush=True,
            )


if __name__ == "__main__":
    main()
