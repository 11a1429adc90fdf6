"""Issue 16: the package's score and calls on the two-batch scenarios of ``eval_detection.py``
(every two-batch dev scenario by default), with each batch's per-gene scale divided out (the
default) and without (``batch_scale=False``); one fit per run. Saves, per run and setting,
what the count without a ratio was computed from (fold distances, batch offsets, codes), the
chosen score and the truth, so the count can be studied offline; prints one line per run and
setting.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/detection_dev/dev_batch_scale_calls.py OUTDIR SPLIT SEED [POSITION ...]

``SPLIT``: ``dev`` or ``heldout`` (the held-out two-batch scenarios are positions 10-13).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, "benchmarks")
from eval_detection import SPLITS

from acsleuth import ACsleuth, metrics
from acsleuth.stages import score as score_stage

POSITIONS = (10, 11, 12, 14, 15, 16, 17, 18)  # every two-batch dev scenario
counted: dict[str, object] = {}


def recording(distances, neighbours, **kwargs):
    """``count_anomalies``, keeping its inputs."""
    counted.update(distances=distances.numpy(), offsets=kwargs["offsets"].numpy())
    counted["batches"] = np.asarray(kwargs["batches"])
    return count_anomalies(distances, neighbours, **kwargs)


count_anomalies = score_stage.count_anomalies
score_stage.count_anomalies = recording


def run(out: Path, split: str, seed: int, position: int) -> None:
    scenario = SPLITS[split][position]
    reference, target = scenario.load(seed)
    truth = target.obs["is_anomaly"].to_numpy().astype(bool)
    model = ACsleuth(random_state=seed, verbose=False, device="cpu", n_jobs=1).fit(reference)
    for flag in (True, False):  # batch_scale on (the default), then off
        model.params["batch_scale"] = flag
        result = model.evaluate(target, batch_key="batch")
        name = f"{split}_p{position}_s{seed}_{'scale' if flag else 'shift'}"
        np.savez(out / f"{name}.npz", truth=truth, score=result.score, anomaly=result.anomaly,
                 **counted)  # fmt: skip
        top = result.score >= np.sort(result.score)[-int(truth.sum())]
        print(name, scenario.label, scenario.batch_effect,
              f"auroc {metrics.auroc(truth, result.score):.3f}",
              f"f1@ratio {metrics.f1(truth, top):.3f}",
              f"f1 calls {metrics.f1(truth, result.anomaly):.3f}",
              f"called/true {result.anomaly.sum() / truth.sum():.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    positions = [int(p) for p in sys.argv[4:]] or POSITIONS
    for p in positions:
        run(out, sys.argv[2], int(sys.argv[3]), p)
