"""Dev-set table from the prototype caches (benchmarks/detection_dev/proto_cache.py): the chosen default beside peers.

Same cells, same fitted module I as cached; peers: pyod KNN/LOF/IForest on expression and
kNN (k=5) in 50 reference PCs (AutoEncoder left out here for time).
    PYTHONPATH=. python benchmarks/detection_dev/proto_dev_table.py DEV
"""

import glob
import re
import sys

import numpy as np
import pandas as pd
import torch
from pyod.models.iforest import IForest
from pyod.models.knn import KNN
from pyod.models.lof import LOF
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, "benchmarks/detection_dev")
import proto_scenarios as P

from acsleuth.stages.neighbours import (
    NeighbourConfig,
    count_anomalies,
    fit_neighbours,
    rank_average,
)

torch.set_num_threads(1)


def f1_top(t, s, n):
    o = np.argsort(-s, kind="stable")
    c = np.zeros(len(s), bool)
    c[o[:n]] = True
    return 2 * (t & c).sum() / (t.sum() + c.sum())


rows = []
for f in sorted(glob.glob(f"/tmp/mt/{sys.argv[1]}_*.npz")):
    m = re.search(r"_(\d+)_s(\d+)", f)
    sc = getattr(P, sys.argv[1])[int(m.group(1))]
    seed = int(m.group(2))
    d = dict(np.load(f, allow_pickle=True))
    t = d["truth"].astype(bool)
    xr, xt = d["xr"], d["xt"]
    nb = fit_neighbours(lambda r: xr[r], len(xr), NeighbourConfig(), seed=seed)
    D = nb.distances(torch.as_tensor(xt))
    knn = D.mean(0).numpy()
    n = count_anomalies(D, nb)
    pca = PCA(min(50, len(xr) - 1), random_state=seed).fit(xr)
    S = {
        "acsleuth ensemble (default)": rank_average(d["mmd"], knn),
        "acsleuth mmd": d["mmd"],
        "acsleuth knn": knn,
        "acsleuth scaled": d["scaled"],
        "pyod KNN": KNN(n_neighbors=5).fit(xr).decision_function(xt),
        "pyod LOF": LOF(n_neighbors=20).fit(xr).decision_function(xt),
        "pyod IForest": IForest(random_state=seed).fit(xr).decision_function(xt),
        "pca-knn": torch.cdist(
            torch.as_tensor(pca.transform(xt)), torch.as_tensor(pca.transform(xr))
        )
        .topk(5, largest=False)
        .values.mean(1)
        .numpy(),
    }
    for k, s in S.items():
        r = dict(
            family=sc["family"],
            file=f.split("/")[-1],
            score=k,
            auroc=roc_auc_score(t, s),
            f1=f1_top(t, s, t.sum()),
        )
        if k.startswith("acsleuth ensemble"):
            r.update(f1_calls=f1_top(t, s, n), called=n / t.sum())
        rows.append(r)
T = pd.DataFrame(rows)
T.to_csv(f"/tmp/mt/{sys.argv[1]}_table.csv", index=False)
fam = [f for f in ("single", "multi", "ratio", "batch", "synthetic") if f in set(T.family)]
M = T.groupby(["score", "family"])[["auroc", "f1"]].mean()
print("| score | " + " | ".join(f"{f} AUROC / F1" for f in fam) + " |")
print("|---|" + "---|" * len(fam))
for s in T.groupby("score").auroc.mean().sort_values(ascending=False).index:
    print(
        f"| {s} | "
        + " | ".join(f"{M.loc[(s, f), 'auroc']:.3f} / {M.loc[(s, f), 'f1']:.3f}" for f in fam)
        + " |"
    )
E = (
    T[T.score.str.startswith("acsleuth ensemble")]
    .groupby("family")[["f1", "f1_calls", "called"]]
    .mean()
)
print(E.round(3).to_string())
print("runs per family:", T[T.score == "pca-knn"].family.value_counts().to_dict())
