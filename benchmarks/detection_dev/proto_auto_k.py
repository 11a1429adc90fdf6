"""``n_subtypes="auto"`` on development scenarios: the highest silhouette against the smallest
k within a tolerance of it (issue 16, deliverable 4).

Cells: the held-out types of ``eval_pipeline.py``'s development scenarios and of
``eval_detection.py``'s development ``multi`` scenarios (one batch), plus 15 % as many normal
cells drawn with the seed (calls are never clean); 50 principal components, k = 2..10,
k-means with 20 restarts, NMI on the anomalous cells against their types.

usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/detection_dev/proto_auto_k.py
"""

import sys
import warnings

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

sys.path.insert(0, "benchmarks")
import eval_pipeline
from eval_detection import SPLITS

from acsleuth import datasets
from acsleuth.stages.subtype import choose_n_subtypes, kmeans, principal_components

warnings.filterwarnings("ignore")
TOLERANCES = (0.0, 0.01, 0.02, 0.03)
CONTAMINATION = 0.15

cases = list(eval_pipeline.DEV.values()) + [
    (s.held, s.ratio) for s in SPLITS["dev"] if s.family == "multi"
]
found = {t: [] for t in TOLERANCES}
for held, ratio in cases:
    for seed in (0, 1, 2):
        _, target = datasets.pbmc_holdout(list(held), anomaly_ratio=ratio, seed=seed)
        truth = target.obs["is_anomaly"].to_numpy(bool)
        types = target.obs["cell_type"].astype(str).to_numpy()
        rng = np.random.default_rng(seed)
        normal = rng.choice(np.flatnonzero(~truth), int(CONTAMINATION * truth.sum()), False)
        cells = np.sort(np.concatenate([np.flatnonzero(truth), normal]))
        x = torch.from_numpy(target.X.toarray()[cells].astype(np.float32))
        z = principal_components(x, 50, seed=seed)
        n_types, anomalous = len(set(types[truth])), truth[cells]
        line = [" + ".join(held), seed, n_types]
        for tolerance in TOLERANCES:
            k, _ = choose_n_subtypes(z, range(2, 11), n_init=20, seed=seed, tolerance=tolerance)
            labels = kmeans(z, k, n_init=20, seed=seed).labels_
            nmi = normalized_mutual_info_score(types[cells][anomalous], labels[anomalous])
            found[tolerance].append((k == n_types, nmi))
            line.append(f"tol {tolerance}: k {k} NMI {nmi:.3f}")
        print(*line, sep=" | ", flush=True)
for tolerance, runs in found.items():
    right, nmi = np.mean(runs, axis=0)
    print(f"tolerance {tolerance}: right K {right:.3f}, NMI {nmi:.3f} ({len(runs)} runs)")
