"""Dump the cells acsleuth calls on ``eval_pipeline.py`` scenarios, with their corrected
expression and true types, so that the ``n_subtypes="auto"`` rule can be chosen offline
(issue 16, deliverable 4). ``SPLIT`` is ``dev``, ``held-out`` or ``more-dev`` (:data:`MORE_DEV`).

One ``.npz`` per scenario, seed and number of batches: ``corrected`` (called cells x genes),
``types`` (their true type, ``"normal"`` for false calls) and ``n_types``.

usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/detection_dev/dump_called_cells.py \
    OUTDIR SPLIT SEED [SCENARIO ...]
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
import eval_pipeline

from acsleuth import ACsleuth, datasets

B, MONO, NK, DC = eval_pipeline.B, eval_pipeline.MONO, eval_pipeline.NK, eval_pipeline.DC
#: development scenarios of 4 and 5 types for the auto rule (eval_pipeline's dev ones have 2-3)
MORE_DEV = {
    "DC+NK+CD8T+B": ((DC, NK, eval_pipeline.CD8, B), 0.4),
    "Mono+DC+TReg+CD8naive+NK": ((MONO, DC, eval_pipeline.TREG, eval_pipeline.CD8_NAIVE, NK), 0.5),
}
SPLITS = {**eval_pipeline.SPLITS, "more-dev": MORE_DEV}
out, split, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
names = sys.argv[4:] or list(SPLITS[split])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
for name in names:
    held, ratio = SPLITS[split][name]
    effect = eval_pipeline.EFFECTS[seed % len(eval_pipeline.EFFECTS)]
    reference, two = datasets.pbmc_holdout(
        held, anomaly_ratio=ratio, n_batches=2, batch_effect=effect, seed=seed
    )
    _, one = datasets.pbmc_holdout(held, anomaly_ratio=ratio, seed=seed)
    model = ACsleuth(device="cpu", random_state=seed, verbose=False).fit(reference)
    for n_batches, target in ((1, one), (2, two)):
        truth = target.obs["is_anomaly"].to_numpy(bool)
        types = np.where(truth, target.obs["cell_type"].astype(str).to_numpy(), "normal")
        n_types = len(set(types[truth]))
        annotated = target.copy()
        model.run(
            reference, annotated, batch_key="batch" if n_batches == 2 else None, n_subtypes=n_types
        )
        called = annotated.obs["acsleuth_anomaly"].to_numpy(bool)
        corrected = annotated.layers.get(
            "acsleuth_corrected", annotated.obsm.get("acsleuth_corrected")
        )
        corrected = np.asarray(corrected)[called]
        path = out / f"{split}_{name}_s{seed}_b{n_batches}.npz"
        np.savez_compressed(path, corrected=corrected, types=types[called], n_types=n_types)
        print(path, called.sum(), truth.sum(), flush=True)
