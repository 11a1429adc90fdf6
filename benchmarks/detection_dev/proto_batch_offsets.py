"""Prototype (issue 16, dev set): the reference distance of two-batch targets with and without
shifting each batch onto the reference (``NeighbourFold.batch_offset``), model-free.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/detection_dev/proto_batch_offsets.py 10,11,12,14

Prints, per dev scenario and seed, the AUROC of the unshifted distance, then of the shifted
one for (rounds, trim) = (1, 0.5), (3, 0.5), (3, 0.3), (5, 0.5).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_num_threads(1)
from proto_cache import load
from proto_scenarios import DEV

from acsleuth import metrics
from acsleuth.data import prepare
from acsleuth.stages.neighbours import NeighbourConfig, fit_neighbours

VARIANTS = ((1, 0.5), (3, 0.5), (3, 0.3), (5, 0.5))


def shifted_distance(neighbours, x, codes, rounds, trim):
    scores = torch.zeros(x.shape[0])
    for batch in np.unique(codes):
        rows = torch.from_numpy(codes == batch)
        for fold in neighbours.folds:
            offset = fold.batch_offset(x[rows], neighbours.k, iterations=rounds, trim=trim)
            scores[rows] += fold.distances(x[rows], neighbours.k, offset=offset)
    return scores.numpy() / len(neighbours.folds)


def main() -> None:
    for position in map(int, sys.argv[1].split(",")):
        scenario = DEV[position]
        for seed in (0, 1, 2):
            reference, target = load(scenario, seed)
            ref = prepare(reference, name="reference")
            tgt = prepare(target, genes=ref.genes, name="target")
            x_ref = ref.rows(np.arange(ref.n_obs))
            x = torch.as_tensor(tgt.rows(np.arange(tgt.n_obs)))
            neighbours = fit_neighbours(
                lambda rows, x_ref=x_ref: x_ref[rows], ref.n_obs, NeighbourConfig(), seed=seed
            )
            truth = target.obs["is_anomaly"].to_numpy()
            codes = target.obs["batch"].cat.codes.to_numpy()
            aurocs = [metrics.auroc(truth, neighbours.distances(x).mean(0).numpy())]
            for rounds, trim in VARIANTS:
                aurocs.append(
                    metrics.auroc(truth, shifted_distance(neighbours, x, codes, rounds, trim))
                )
            print(
                position,
                scenario["family"],
                scenario.get("held"),
                scenario["sd"],
                seed,
                " ".join(f"{a:.3f}" for a in aurocs),
                flush=True,
            )


if __name__ == "__main__":
    main()
