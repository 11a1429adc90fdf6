"""Prototype (issue 16, dev set): the ranking the MMD predictor is warm-started from.

    PYTHONPATH=. python benchmarks/detection_dev/proto_warm_ranking.py 0,1,2,...,14 SEED OUT.jsonl

Per dev scenario of ``benchmarks/eval_detection.py`` and seed, module I is fitted once (50 + 20
epochs, one thread); the target is scored with ``warm_ranking="scaled"`` (before issue 16) and
``"knn"``, and each ``"mmd"``, ``"ensemble"`` and ``"knn"`` score is written as a JSON line:
AUROC, F1 at the true ratio and F1 of the calls without a ratio (the count of the reference's
null distances, :func:`acsleuth.stages.neighbours.count_anomalies`).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from eval_detection import DEV

from acsleuth import ACsleuth, metrics

torch.set_num_threads(1)


def top_f1(truth: np.ndarray, score: np.ndarray, n: int) -> float:
    called = np.zeros(len(score), dtype=bool)
    called[np.argsort(-score, kind="stable")[:n]] = True
    return metrics.f1(truth, called)


def main() -> None:
    positions, seed, out = [int(p) for p in sys.argv[1].split(",")], int(sys.argv[2]), sys.argv[3]
    with open(out, "a") as sink:
        for position in positions:
            scenario = DEV[position]
            reference, target = scenario.load(seed)
            truth = target.obs["is_anomaly"].to_numpy().astype(bool)
            batch_key = "batch" if scenario.n_batches > 1 else None
            model = ACsleuth(random_state=seed, verbose=False, device="cpu", n_jobs=1)
            model.fit(reference)
            for ranking in ("scaled", "knn"):
                model.params["warm_ranking"] = ranking
                result = model.evaluate(target, batch_key=batch_key)
                count = int(result.anomaly.sum())
                for name in ("mmd", "ensemble", "knn"):
                    score = result.scores[name]
                    row = {
                        "pos": position,
                        "family": scenario.family,
                        "seed": seed,
                        "warm_ranking": ranking,
                        "score": name,
                        "auroc": metrics.auroc(truth, score),
                        "f1": top_f1(truth, score, int(truth.sum())),
                        "f1_calls": top_f1(truth, score, count),
                        "called_over_true": count / truth.sum(),
                    }
                    sink.write(json.dumps(row) + "\n")
            print(position, seed, "done", flush=True)


if __name__ == "__main__":
    main()
