"""How often ``n_types="auto"`` finds K (issue 19): dev and held-out splits, 3 seeds each.

Runs :func:`acsleuth.stages.annotate.estimate_n_types` (what ``OpenWorldAnnotator("auto")``
calls) on the splits of ``eval_annotate.py`` and on further dev cases: one novel pbmc type
(B, Mono, NK) and synthetic sets with one or two novel types. Prints the estimate of every
run and how many are exact or within one of the true K.

    OMP_NUM_THREADS=1 python benchmarks/eval_n_types.py
"""

from __future__ import annotations

import numpy as np
import torch
from eval_annotate import SPLITS, SYNTHETIC

from acsleuth import datasets
from acsleuth.data import MinibatchLoader, highly_variable_genes, prepare
from acsleuth.stages.annotate import estimate_n_types
from acsleuth.train.contrastive import OpenWorldConfig

# name -> (pbmc novel types, or the synthetic set's number of novel types; role)
CASES: dict[str, tuple[tuple[str, ...] | int, str]] = {
    **{name: split for name, split in SPLITS.items()},
    "B": (("CD19+ B",), "dev"),
    "Mono": (("CD14+ Monocyte",), "dev"),
    "NK": (("CD56+ NK",), "dev"),
    "synthetic": (SYNTHETIC["n_anomaly_types"], "dev"),
    "synthetic-1": (1, "dev"),
    "synthetic-2": (2, "dev"),
}


def estimate(novel: tuple[str, ...] | int, seed: int) -> tuple[int, int]:
    """The estimated and the true K of one case."""
    if isinstance(novel, int):
        reference, target = datasets.synthetic(**{**SYNTHETIC, "n_anomaly_types": novel}, seed=seed)
    else:
        reference, target = datasets.pbmc_holdout(list(novel), seed=seed)
    config = OpenWorldConfig()  # the annotator's gene selection and batch size
    ref = prepare(reference, name="reference")
    genes = highly_variable_genes(ref, config.n_top_genes)
    ref = ref.with_genes(genes)
    tgt = prepare(target, genes=genes, name="target")
    seen = reference.obs["cell_type"].astype(str)
    k, _ = estimate_n_types(
        MinibatchLoader(ref, batch_size=config.batch_size, shuffle=False, seed=seed),
        MinibatchLoader(tgt, batch_size=config.batch_size, shuffle=False, seed=seed),
        seen.nunique(),
        seed=seed,
    )
    return k, len(set(seen) | set(target.obs["cell_type"].astype(str)))


def main() -> None:
    torch.set_num_threads(1)
    tally: dict[str, list[int]] = {}
    for name, (novel, role) in CASES.items():
        for seed in (0, 1, 2):
            k, true = estimate(novel, seed)
            print(f"{role:8s} {name:18s} seed {seed}: K {true}, estimated {k}", flush=True)
            tally.setdefault(role, []).append(k - true)
    for role, errors in tally.items():
        err = np.abs(errors)
        print(
            f"{role}: exact {int((err == 0).sum())} of {len(err)}, within one {int((err <= 1).sum())}"
        )


if __name__ == "__main__":
    main()
