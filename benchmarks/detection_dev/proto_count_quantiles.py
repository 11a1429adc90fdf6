"""Calls without a ratio from the package default's own ranking (issue 16), with the count
taken at the null's 0.6 quantile (the rule before), averaged over 0.30-0.60 (the rule now,
``COUNT_QUANTILES``, "default"), over 0.45-0.60 (tried after a batch shift, not adopted)
and at 0.5, all from the same fit; no peers (the ranking is the default's, so AUROC and F1
at the true ratio equal ``eval_detection.py``'s).

usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/detection_dev/proto_count_quantiles.py \
           dev|heldout OUT.csv SEED [SEED ...] [--only POSITION ...]

The rules were chosen on ``dev``; ``heldout`` was run afterwards, to report.
"""

import sys

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)
sys.path.insert(0, "benchmarks")
from eval_detection import SPLITS

from acsleuth import ACsleuth, metrics
from acsleuth.stages import score as score_stage
from acsleuth.stages.neighbours import count_anomalies

RULES = {
    "q0.6": (0.6,),
    "mean 0.30-0.60": (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6),
    "mean 0.45-0.60": (0.45, 0.5, 0.55, 0.6),
    "q0.5": (0.5,),
    "default": None,
}
counts: dict[str, int] = {}


def recording(distances, neighbours, *, shifted=False):
    for name, quantiles in RULES.items():
        kwargs = {} if quantiles is None else {"quantiles": quantiles}
        counts[name] = count_anomalies(distances, neighbours, shifted=shifted, **kwargs)
    return counts["default"]


score_stage.count_anomalies = recording


def top(values: np.ndarray, n: int) -> np.ndarray:
    called = np.zeros(len(values), bool)
    called[np.argsort(-values, kind="stable")[:n]] = True
    return called


rows = []
split, out, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
only = [int(p) for p in rest[rest.index("--only") + 1 :]] if "--only" in rest else None
seeds = [int(s) for s in (rest[: rest.index("--only")] if "--only" in rest else rest)]
for seed in seeds:
    for i, scenario in enumerate(SPLITS[split]):
        if only is not None and i not in only:
            continue
        ref, tgt = scenario.load(seed)
        truth = tgt.obs["is_anomaly"].to_numpy().astype(bool)
        model = ACsleuth(random_state=seed, verbose=False, device="cpu", n_jobs=1).fit(ref)
        result = model.evaluate(tgt, batch_key="batch" if scenario.n_batches > 1 else None)
        row = dict(
            i=i, family=scenario.family, scenario=scenario.label, seed=seed, ratio=truth.mean()
        )
        row["auroc"] = metrics.auroc(truth, result.score)
        row["f1_at_ratio"] = metrics.f1(truth, top(result.score, int(truth.sum())))
        for name, n in counts.items():
            row[f"gap {name}"] = row["f1_at_ratio"] - metrics.f1(truth, top(result.score, n))
            row[f"called/true {name}"] = n / truth.sum()
        rows.append(row)
        print(row, flush=True)
pd.DataFrame(rows).to_csv(out, index=False)
