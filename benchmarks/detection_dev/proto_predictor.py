"""Prototype: MMD predictor variants warm-started from other rankings, on one dev scenario."""

import json
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from dataclasses import replace

from sklearn.metrics import roc_auc_score

from acsleuth import ACsleuth, datasets
from acsleuth.data import prepare
from acsleuth.stages.mmd import fit_predictor, predict_logits
from acsleuth.stages.neighbours import (
    NeighbourConfig,
    count_anomalies,
    fit_neighbours,
    rank_average,
)

held = json.loads(sys.argv[1])
ratio = float(sys.argv[2])
seed = int(sys.argv[3])
ref, tgt = datasets.pbmc_holdout(held, anomaly_ratio=ratio, seed=seed)
t = tgt.obs["is_anomaly"].to_numpy()
m = ACsleuth(random_state=seed, verbose=False, device="cpu").fit(ref)
rs = prepare(ref, genes=m.genes_, name="reference")
ts = prepare(tgt, genes=m.genes_, name="target")
nb = fit_neighbours(rs.rows, rs.n_obs, NeighbourConfig(k=10), seed=seed)
D = nb.distances(torch.as_tensor(ts.rows(np.arange(ts.n_obs))))
knn = D.mean(0)
n = count_anomalies(D, nb)
scores, res, _ = m.reconstruct(ts, keep_residuals=True)
cfg = m.settings.scorer_config()
out = {"scaled": scores["scaled"].numpy(), "knn": knn.numpy()}
rank_sk = torch.as_tensor(rank_average(scores["scaled"].numpy(), knn.numpy()), dtype=torch.float32)
for name, ranking, c, r in [
    ("mmd", scores["scaled"], cfg, None),
    ("mmd warm r(scaled,knn)", rank_sk, cfg, None),
    ("mmd warm knn", knn, cfg, None),
    ("mmd warm r, n_est", rank_sk, cfg, n / len(t)),
    ("warm only r", rank_sk, replace(cfg, epochs=0), None),
    ("mmd warm r sup0.3", rank_sk, replace(cfg, supervision=0.3), None),
]:
    torch.manual_seed(seed)
    if r is None:
        p = fit_predictor(
            res, ratio=None, config=c, ranking=ranking, anchors=m.anchors_, seed=seed, verbose=False
        )
    else:  # pseudo-labels from the estimated count: pass via ranking with ratio for labels only
        from acsleuth.stages import mmd as M

        orig = M.pseudo_labels
        M.pseudo_labels = lambda rk, frac: orig(rk, r)
        p = fit_predictor(
            res, ratio=None, config=c, ranking=ranking, anchors=m.anchors_, seed=seed, verbose=False
        )
        M.pseudo_labels = orig
    out[name] = predict_logits(p, res).numpy()
out["r(mmd,knn)"] = rank_average(out["mmd"], out["knn"])
out["r(mmd warm r, knn)"] = rank_average(out["mmd warm r(scaled,knn)"], out["knn"])
print(held, ratio, seed, "n_est", n, "true", t.sum())
for k, v in out.items():
    print(f"  {k:28s} {roc_auc_score(t, v):.3f}")
