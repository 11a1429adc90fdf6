"""Calls without a ratio on two-batch targets, with each far-moved batch's null lifted (the
default, ``count_anomalies(..., offsets=...)``) and without the lift, from the same fit and
the package default's own ranking; no peers (AUROC and F1 at the true ratio are the
default's).

usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/detection_dev/proto_null_lift.py \
           dev|heldout|pipeline-dev|pipeline-held-out OUT.csv SEED [SEED ...]

``dev`` / ``heldout``: the two-batch scenarios of ``eval_detection.py``'s splits;
``pipeline-*``: ``eval_pipeline.py``'s scenarios, two batches, effect sd 0.5 / 1 / 2 by seed.
The lift was chosen on ``dev`` and ``pipeline-dev``; the held-out ones were run afterwards.
"""

import sys

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)
sys.path.insert(0, "benchmarks")
import eval_pipeline
from eval_detection import SPLITS

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.stages import score as score_stage
from acsleuth.stages.neighbours import count_anomalies

counts: dict[str, int] = {}


def recording(distances, neighbours, **kwargs):
    counts["no lift"] = count_anomalies(distances, neighbours, **{**kwargs, "offsets": None})
    counts["default"] = count_anomalies(distances, neighbours, **kwargs)
    return counts["default"]


score_stage.count_anomalies = recording


def cases(split: str, seed: int):
    """(label, family, reference, target) of every two-batch scenario of ``split``."""
    if split in SPLITS:
        for scenario in SPLITS[split]:
            if scenario.n_batches > 1:
                yield (scenario.label, scenario.family, *scenario.load(seed))
        return
    effect = eval_pipeline.EFFECTS[seed % len(eval_pipeline.EFFECTS)]
    for name, (held, ratio) in eval_pipeline.SPLITS[split.removeprefix("pipeline-")].items():
        data = datasets.pbmc_holdout(
            list(held), anomaly_ratio=ratio, n_batches=2, batch_effect=effect, seed=seed
        )
        yield (f"{name}, sd {effect}", f"pipeline sd {effect}", *data)


def top(values: np.ndarray, n: int) -> np.ndarray:
    called = np.zeros(len(values), bool)
    called[np.argsort(-values, kind="stable")[:n]] = True
    return called


def row_of(truth: np.ndarray, score: np.ndarray, **labels) -> dict:
    """AUROC, F1 at the true ratio, and the F1 gap and called / true of each count."""
    at_ratio = metrics.f1(truth, top(score, int(truth.sum())))
    gaps = {f"gap {k}": at_ratio - metrics.f1(truth, top(score, n)) for k, n in counts.items()}
    ratios = {f"called/true {k}": n / truth.sum() for k, n in counts.items()}
    return {
        **labels,
        "auroc": metrics.auroc(truth, score),
        "f1_at_ratio": at_ratio,
        **gaps,
        **ratios,
    }


rows = []
split, out, seeds = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
for seed in seeds:
    for label, family, ref, tgt in cases(split, seed):
        truth = tgt.obs["is_anomaly"].to_numpy().astype(bool)
        model = ACsleuth(random_state=seed, verbose=False, device="cpu", n_jobs=1).fit(ref)
        result = model.evaluate(tgt, batch_key="batch")
        rows.append(row_of(truth, result.score, family=family, scenario=label, seed=seed))
        print(rows[-1], flush=True)
pd.DataFrame(rows).to_csv(out, index=False)
