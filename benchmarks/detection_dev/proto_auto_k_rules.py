"""Rules for ``n_subtypes="auto"`` on the cells acsleuth called (issue 16, deliverable 4).

Reads the dumps of ``dump_called_cells.py`` (called cells' corrected expression and true
types), takes 50 principal components as the subtype stage does, and for each rule picks a
k in 2..10; NMI of k-means (20 restarts) at that k on the true anomalies among the calls,
as the subtype stage's DESC stops at its k-means start. Rules: silhouette (highest; smallest
k within 0.01 of the highest, the default), the same on 10 and 20 PCs, Calinski-Harabasz,
Davies-Bouldin, the gap statistic (10 uniform references in the PCs' box) and subsample
stability (largest k whose 80 % subsamples agree with ARI >= 0.8 / 0.9).

usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/detection_dev/proto_auto_k_rules.py 'DUMPDIR/dev_*.npz'
"""

import glob
import sys
import warnings

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.metrics import normalized_mutual_info_score as nmi

from acsleuth.stages.subtype import principal_components

warnings.filterwarnings("ignore")
K = range(2, 11)


def km(z, k, seed):
    return KMeans(k, n_init=20, random_state=seed).fit(z)


def gap(z, fits, seed, B=10):
    rng = np.random.default_rng(seed)
    lo, hi = z.min(0), z.max(0)
    out = {}
    refs = [rng.uniform(lo, hi, size=z.shape) for _ in range(B)]
    for k in K:
        w = np.log(fits[k].inertia_)
        wr = np.array(
            [np.log(KMeans(k, n_init=3, random_state=seed).fit(r).inertia_) for r in refs]
        )
        out[k] = (wr.mean() - w, wr.std() * np.sqrt(1 + 1 / B))
    for k in K:
        if k + 1 in out and out[k][0] >= out[k + 1][0] - out[k + 1][1]:
            return k
    return max(K)


def stability(z, seed, thr):
    rng = np.random.default_rng(seed)
    n = len(z)
    res = {}
    from sklearn.metrics import adjusted_rand_score as ari

    for k in K:
        s = []
        for r in range(5):
            a = rng.choice(n, int(0.8 * n), False)
            b = rng.choice(n, int(0.8 * n), False)
            la = KMeans(k, n_init=3, random_state=r).fit(z[a]).predict(z)
            lb = KMeans(k, n_init=3, random_state=r).fit(z[b]).predict(z)
            s.append(ari(la, lb))
        res[k] = np.mean(s)
    ok = [k for k in K if res[k] >= thr]
    return max(ok) if ok else 2, res


def choose(z, seed):
    fits = {k: km(z, k, seed) for k in K}
    sil = {k: silhouette_score(z, fits[k].labels_) for k in K}
    ch = {k: calinski_harabasz_score(z, fits[k].labels_) for k in K}
    db = {k: davies_bouldin_score(z, fits[k].labels_) for k in K}
    best = max(sil.values())
    out = {
        "sil_tol01": min(k for k in K if sil[k] >= best - 0.01),
        "sil_max": max(sil, key=sil.get),
        "ch_max": max(ch, key=ch.get),
        "db_min": min(db, key=db.get),
        "gap": gap(z, fits, seed),
    }
    # silhouette on fewer PCs
    for d in (10, 20):
        zz = z[:, :d]
        s2 = {k: silhouette_score(zz, km(zz, k, seed).labels_) for k in K}
        b2 = max(s2.values())
        out[f"sil{d}_tol01"] = min(k for k in K if s2[k] >= b2 - 0.01)
        out[f"sil{d}_max"] = max(s2, key=s2.get)
    for thr in (0.8, 0.9):
        out[f"stab{thr}"] = stability(z, seed, thr)[0]
    return out, fits, sil


rows = []
for path in sorted(glob.glob(sys.argv[1])):
    d = np.load(path, allow_pickle=True)
    x, types, n_types = d["corrected"], d["types"].astype(str), int(d["n_types"])
    seed = int(path.split("_s")[-1][0])
    z = principal_components(torch.from_numpy(x.astype(np.float32)), 50, seed=seed)
    out, fits, sil = choose(z, seed)
    truth = types != "normal"
    line = {"case": path.split("/")[-1][:-4], "K": n_types}
    for name, k in out.items():
        labels = fits[k].labels_ if k in fits else km(z, k, seed).labels_
        line[name] = (k, nmi(types[truth], labels[truth]))
    line["K_given"] = (n_types, nmi(types[truth], fits[n_types].labels_[truth]))
    rows.append(line)
    print(
        line["case"],
        n_types,
        " ".join(f"{n}:{v[0]}/{v[1]:.3f}" for n, v in line.items() if isinstance(v, tuple)),
        flush=True,
    )
names = [n for n in rows[0] if isinstance(rows[0][n], tuple)]
for n in names:
    ks = np.array([r[n][0] == r["K"] for r in rows])
    v = np.array([r[n][1] for r in rows])
    print(f"{n:12s} rightK {ks.mean():.3f} NMI {v.mean():.3f}  n={len(rows)}")
