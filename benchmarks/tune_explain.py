"""The sweep behind ACE's defaults (issue 20), on the development part only.

Development part: the simulation's seeds 1 and 2 (clean and complex; ``eval_explain.py``
reports seed 0) and the pbmc68k_reduced groups ``DEV_GROUPS`` of ``eval_explain.py`` (it
reports the three others separately). For each setting ``EMBEDDING:X:BETA:LAM``
(``EMBEDDING`` ``pca`` with ``X`` components, or ``whitened`` with ``X`` the floor quantile;
``EMBEDDING:X:BETA:LAM:fused:K`` fuses the nearest-group and complement panels with
``fusion_k`` ``K``, without the suffix the nearest-group panel alone)
it prints the recall of the causal genes in each group's top 20 on the four simulated sets,
the n <= 20 at which ACE's kNN-Jaccard is below Wilcoxon's, and the pbmc top-8 / top-16
SVM AUROC and redundancy of the development groups.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tune_explain.py pca:30:1:4 whitened:0.9:1:4
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tune_explain.py whitened:0.9:1:4:fused:10
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData
from eval_explain import DEV_GROUPS

import acsleuth
from acsleuth import metrics
from acsleuth.stages import explain as ace

NS = (1, 2, 3, 5, 8, 10, 15, 20)


def ace_order(x: np.ndarray, codes: np.ndarray, spec: str) -> list[np.ndarray]:
    """Each group's genes, best first, for the setting ``spec``."""
    embedding, value, beta, lam, *panel = spec.split(":")
    config = ace.ExplainConfig(beta=float(beta), lam=float(lam), panel="nearest")
    if panel:
        config = replace(config, panel=panel[0], fusion_k=float(panel[1]))
    if embedding == "whitened":
        mapping = ace.whitened_embedding(x, float(value))
    else:
        mapping = ace.pca_embedding(x, int(value))
    z = mapping(torch.as_tensor(x)).numpy()
    k = int(codes.max()) + 1
    head = ace.kmeans_head(z, codes, ace.group_centroids(z, codes, k), config.beta)
    found = ace.explain(
        x,
        codes,
        ace.cluster_model(mapping, head),
        config=config,
        complement=lambda g: ace.complement_model(mapping, z, codes, g, config.beta),
    )
    return [found[g].order for g in range(k)]


def wilcoxon_order(adata: AnnData, groupby: str) -> list[np.ndarray]:
    scratch = adata.copy()
    sc.tl.rank_genes_groups(scratch, groupby, method="wilcoxon", n_genes=adata.n_vars)
    names = scratch.uns["rank_genes_groups"]["names"]
    genes = list(adata.var_names)
    return [np.array([genes.index(n) for n in names[g]]) for g in names.dtype.names]


def simulation_line(spec: str, sims: list[AnnData], wilcoxon: list[list]) -> str:
    recalls, below = [], []
    for adata, reference in zip(sims, wilcoxon, strict=True):
        x, labels = adata.X, adata.obs["group"].astype(str).to_numpy()
        groups = list(adata.obs["group"].cat.categories)
        order = ace_order(x, adata.obs["group"].cat.codes.to_numpy(), spec)
        causal = set(np.flatnonzero((adata.var["role"] == "causal").to_numpy()))
        recalls.append(np.mean([len(causal & set(o[:20])) / 20 for o in order]))
        wins = []
        for n in NS:
            ours = metrics.knn_jaccard_distance(
                x, labels, {g: o[:n] for g, o in zip(groups, order, strict=True)}
            )
            theirs = metrics.knn_jaccard_distance(
                x, labels, {g: o[:n] for g, o in zip(groups, reference, strict=True)}
            )
            wins.append("+" if ours < theirs else "-")
        below.append("".join(wins))
    return f"recall@20 {' '.join(f'{r:.2f}' for r in recalls)} | J<Wilcoxon at {NS}: {below}"


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    sims = [
        acsleuth.datasets.causal_panels(500, 5, complex=c, seed=s) for s in (1, 2) for c in (0, 1)
    ]
    wilcoxon = [wilcoxon_order(a, "group") for a in sims]
    pbmc = sc.datasets.pbmc68k_reduced().raw.to_adata()
    x = np.asarray(pbmc.X.toarray(), dtype=np.float32)
    labels = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    names = [str(c) for c in pbmc.obs["bulk_labels"].cat.categories]
    codes = pbmc.obs["bulk_labels"].cat.codes.to_numpy()
    for spec in sys.argv[1:]:
        line = f"{spec:18s} {simulation_line(spec, sims, wilcoxon)}"
        order = dict(zip(names, ace_order(x, codes, spec), strict=True))
        for n in (8, 16):
            auroc = [metrics.panel_auroc(x, labels, g, order[g][:n]) for g in DEV_GROUPS]
            red = np.mean([metrics.panel_redundancy(x, order[g][:n]) for g in DEV_GROUPS])
            line += f" | pbmc top{n} AUROC {np.mean(auroc):.3f} red. {red:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
