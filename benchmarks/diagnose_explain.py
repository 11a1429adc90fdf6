"""Why ACE ranked dependent genes over causal ones on its simulation (issue 20).

On ``datasets.causal_panels(500, 5, seed=SEED)`` (default 1, a development seed) it prints,
per embedding (``pca``: 30 principal components; ``whitened``: the default), the mean
|weight| of each gene role in the embedding's linear map, then per group the roles of ACE's
top 20 genes, the number of genes any cell's delta uses and the fraction of cells flipped.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/diagnose_explain.py --seed 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import acsleuth
from acsleuth.stages import explain as ace

ROLES = ("causal", "dependent", "noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--complex", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adata = acsleuth.datasets.causal_panels(500, 5, complex=args.complex, seed=args.seed)
    x, roles = adata.X, adata.var["role"].astype(str).to_numpy()
    codes = adata.obs["group"].cat.codes.to_numpy()
    config = ace.ExplainConfig()
    spread = {r: round(float(x[:, roles == r].std(0).mean()), 2) for r in ROLES}
    print("mean gene standard deviation by role:", spread)
    for name, mapping in (
        ("pca", ace.pca_embedding(x, config.n_components)),
        ("whitened", ace.whitened_embedding(x, config.whiten_floor)),
    ):
        weights = np.abs(mapping.components.numpy())
        by_role = {r: round(float(weights[:, roles == r].mean()), 3) for r in ROLES}
        print(f"{name}: mean |weight| of the map by role {by_role}")
        z = mapping(torch.as_tensor(x)).numpy()
        head = ace.kmeans_head(z, codes, ace.group_centroids(z, codes, 5), config.beta)
        found = ace.explain(x, codes, ace.cluster_model(mapping, head), config=config)
        for k, result in found.items():
            top = roles[result.order[:20]]
            counts = {r: int((top == r).sum()) for r in ROLES}
            print(
                f"  group {k}: top 20 {counts}, genes with any nonzero delta "
                f"{int((result.score > 0).sum())}, flipped {result.flipped:.2f}"
            )


if __name__ == "__main__":
    main()
