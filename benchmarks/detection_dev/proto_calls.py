"""Prototype (issue 16): calls without a ratio on the dev caches, for several null quantiles."""

import glob
import re
import sys

import numpy as np
import torch

torch.set_num_threads(1)
import pandas as pd

sys.path.insert(0, "benchmarks/detection_dev")
import proto_scenarios as P
from sklearn.metrics import roc_auc_score

from acsleuth.stages.neighbours import (
    NeighbourConfig,
    count_anomalies,
    fit_neighbours,
    rank_average,
)


def f1_top(t, s, n):
    o = np.argsort(-s, kind="stable")
    c = np.zeros(len(s), bool)
    c[o[:n]] = True
    tp = (t & c).sum()
    return 2 * tp / (t.sum() + c.sum())


rows = []
for f in sorted(glob.glob(f"/tmp/mt/{sys.argv[1]}_*.npz")):
    m = re.search(r"_(\d+)_s(\d+)", f)
    sc = getattr(P, sys.argv[1])[int(m.group(1))]
    d = dict(np.load(f, allow_pickle=True))
    t = d["truth"].astype(bool)
    nb = fit_neighbours(lambda r: d["xr"][r], len(d["xr"]), NeighbourConfig(k=10), seed=0)
    D = nb.distances(torch.as_tensor(d["xt"]))
    knn = D.mean(0).numpy()
    ens = rank_average(d["mmd"], knn)
    r = dict(
        family=sc["family"],
        file=f[-12:],
        ratio=t.mean(),
        auroc=roc_auc_score(t, ens),
        f1=f1_top(t, ens, t.sum()),
    )
    for q in (0.5, 0.6, 0.7, 0.8):
        n = count_anomalies(D, nb, quantiles=(q,))
        r[f"f1_q{q}"] = f1_top(t, ens, n)
        r[f"c_q{q}"] = n / t.sum()
    rows.append(r)
T = pd.DataFrame(rows)
pd.set_option("display.width", 250)
print(T.round(2).to_string())
print(T.groupby("family").mean(numeric_only=True).round(3).to_string())
