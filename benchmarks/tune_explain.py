"""The sweep behind ACE's defaults (issue 20): top-8 / top-16 SVM AUROC and redundancy on
pbmc68k_reduced's groups with >= 50 cells, for settings given as ``PREP:NCOMP:BETA:LAM``
(``PREP``: ``raw`` = PCA of the log-normalised genes, ``s`` = PCA of z-scored genes with
perturbations in log units, ``z`` = everything on z-scored genes).

    OMP_NUM_THREADS=1 python benchmarks/tune_explain.py raw:30:1:4 raw:30:0.3:4 s:30:1:4
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import scanpy as sc
import torch

from acsleuth import metrics
from acsleuth.stages import explain as ace


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    x = np.asarray(adata.X.toarray(), dtype=np.float32)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    names = sorted(set(labels))
    codes = np.array([names.index(label) for label in labels])
    evaluated = [g for g in names if (labels == g).sum() >= 50]
    for spec in sys.argv[1:]:
        prep, n_components, beta, lam = spec.split(":")
        data = (x - x.mean(0)) / (x.std(0) + 1e-6) if prep == "z" else x
        config = ace.ExplainConfig(
            beta=float(beta),
            lam=float(lam),
            n_components=int(n_components),
            standardize=prep == "s",
        )
        start = time.perf_counter()
        emb = ace.pca_embedding(data, config.n_components, standardize=config.standardize)
        z = emb(torch.as_tensor(data)).numpy()
        head = ace.kmeans_head(z, codes, ace.group_centroids(z, codes, len(names)), config.beta)
        found = ace.explain(data, codes, ace.cluster_model(emb, head), config=config)
        seconds = time.perf_counter() - start
        line = f"{spec:16s} {seconds:5.0f} s, flipped {np.mean([r.flipped for r in found.values()]):.2f}"
        for n in (8, 16):
            panels = {names[k]: r.order[:n] for k, r in found.items()}
            auroc = np.mean([metrics.panel_auroc(x, labels, g, panels[g]) for g in evaluated])
            redundancy = np.mean([metrics.panel_redundancy(x, panels[g]) for g in evaluated])
            line += f" | top{n} AUROC {auroc:.3f} redundancy {redundancy:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
