"""Quality and CPU seconds of acsleuth's package defaults on the issue-16 scenarios, no peers
(issue 21: a speed change that alters numerics must keep these).

usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/detection_dev/proto_speed_gate.py \\
           dev OUT.csv '{"precision": "fp32"}' SEED [SEED ...]

The JSON holds :class:`acsleuth.ACsleuth` settings over the defaults (``{}``: none). Run it
with ``PYTHONPATH`` at two checkouts to compare code; the CSV's rows carry the AUROC, the F1
at the true ratio and of the calls, and the process seconds of ``fit`` and ``evaluate``.
"""

import json
import sys
import time

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)
sys.path.insert(0, "benchmarks")
from eval_detection import SPLITS, Scenario

from acsleuth import ACsleuth, metrics


def f1_at_ratio(truth: np.ndarray, score: np.ndarray) -> float:
    """F1 of calling the ``truth.sum()`` top-scored cells."""
    called = np.zeros(len(score), bool)
    called[np.argsort(-score, kind="stable")[: int(truth.sum())]] = True
    return metrics.f1(truth, called)


def gate_row(scenario: Scenario, seed: int, settings: dict) -> dict:
    """Fit and evaluate one scenario with the package defaults plus ``settings``."""
    reference, target = scenario.load(seed)
    truth = target.obs["is_anomaly"].to_numpy().astype(bool)
    start = time.process_time()
    model = ACsleuth(random_state=seed, verbose=False, device="cpu", n_jobs=1, **settings)
    model.fit(reference)
    fitted = time.process_time()
    result = model.evaluate(target, batch_key="batch" if scenario.n_batches > 1 else None)
    return {
        "family": scenario.family,
        "scenario": scenario.label,
        "seed": seed,
        "auroc": metrics.auroc(truth, result.score),
        "f1_at_ratio": f1_at_ratio(truth, result.score),
        "f1_calls": metrics.f1(truth, result.anomaly),
        "fit_cpu_s": fitted - start,
        "evaluate_cpu_s": time.process_time() - fitted,
    }


split, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
rows = []
for seed in map(int, sys.argv[4:]):
    for position, scenario in enumerate(SPLITS[split]):
        rows.append({"i": position, **gate_row(scenario, seed, settings)})
        print(rows[-1], flush=True)
pd.DataFrame(rows).to_csv(out, index=False)
