"""End to end on several unseen PBMC types at once: calls, subtypes and F1 x NMI (issue 16).

Each scenario holds 2 to 5 cell types of scanpy's pbmc68k_reduced out of the reference
(:func:`acsleuth.datasets.pbmc_holdout`); the target is measured as one batch, and again
split over two batches, the second with a per-gene effect of sd 0.5, 1 or 2 (by seed). The
scenarios are split into a development set (used to choose) and a held-out set (only
reported). Per scenario and seed module I is fitted once (the reference is the same for
both targets), then, on the same cells:

- ``acsleuth``: ``model.run(reference, target, batch_key=..., n_subtypes=K)`` with the
  package defaults and no ratio, as ``acsleuth run`` does: F1 of its calls, NMI / ARI of
  its subtypes on the true anomalies among them (docs/method.md §6), F1 x NMI;
- on the same called cells: acsleuth's subtypes with ``n_subtypes="auto"`` (50 principal
  components, the default, and 30, the earlier default), and k-means (true ``K``) on 30
  principal components of the cells' uncorrected and of their corrected expression;
- a peer pipeline: kNN distance (k = 5) to the reference in 50 reference principal
  components, told the true anomaly ratio, then k-means (true ``K``) on 30 principal
  components of its called cells; acsleuth's subtype stage on the peer's calls too
  (expression centred per batch on its called-normal cells), which separates the subtype
  stage from the calls.

``called/true`` and the smallest per-type recall of the calls show whether they miss a type.

    OMP_NUM_THREADS=1 python benchmarks/eval_pipeline.py --split dev --out dev.csv
    OMP_NUM_THREADS=1 python benchmarks/eval_pipeline.py --split held-out --out held.csv
    python benchmarks/eval_pipeline.py --quick            # 1 scenario, 1 seed, few epochs
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.baselines import SUBTYPE_PCS, kmeans_on_pcs, peer_pipeline
from acsleuth.data import prepare
from acsleuth.stages.subtype import SubtypeConfig, subtype_anomalies

B, MONO, NK, DC = "CD19+ B", "CD14+ Monocyte", "CD56+ NK", "Dendritic"
TREG, CD8, CD8_NAIVE, CD34 = (
    "CD4+/CD25 T Reg",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
    "CD34+",
)
#: name -> (held-out types, anomaly ratio; None keeps every held-out cell)
DEV = {
    "B+Mono+NK": ((B, MONO, NK), None),
    "CD8T+B": ((CD8, B), 0.3),
    "TReg+Mono+NK": ((TREG, MONO, NK), 0.3),
    "B+Dendritic": ((B, DC), 0.3),
}
HELD_OUT = {
    "Mono+NK": ((MONO, NK), 0.3),
    "CD8T+CD8naive+B": ((CD8, CD8_NAIVE, B), 0.3),
    "B+Mono+NK+CD34": ((B, MONO, NK, CD34), 0.4),
    "TReg+B+Mono+NK+CD34": ((TREG, B, MONO, NK, CD34), 0.5),
}
SPLITS = {"dev": DEV, "held-out": HELD_OUT}
EFFECTS = (0.5, 1.0, 2.0)  # sd of the second batch's per-gene effect, by seed


def batch_centred(x: np.ndarray, batch: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """``x`` minus, per batch, the mean of its cells in ``normal``."""
    out = x.copy()
    for b in np.unique(batch):
        out[batch == b] -= x[(batch == b) & normal].mean(0)
    return out


def evaluate_target(
    model: ACsleuth, reference: AnnData, target: AnnData, *, seed: int, quick: bool
) -> list[dict]:
    """Every method's row on one target (see the module docstring)."""
    truth = target.obs["is_anomaly"].to_numpy(bool)
    types = target.obs["cell_type"].astype(str).to_numpy()
    n_types = len(set(types[truth]))
    two = target.obs["batch"].nunique() > 1
    out: list[dict] = []

    def record(
        method: str, called: np.ndarray, labels: np.ndarray | None, seconds: float, **extra
    ) -> None:
        held = sorted(set(types[truth]))
        row = {
            "method": method,
            "f1": metrics.f1(truth, called),
            "called/true": called.sum() / truth.sum(),
            "min type recall": min(called[types == t].mean() for t in held),
            "seconds": seconds,
            **extra,
        }
        if labels is not None:
            subtype = np.full(len(truth), None, dtype=object)
            subtype[called] = labels
            row.update(metrics.subtype_scores(truth, called, types, subtype))
        out.append(row)

    annotated = target.copy()
    start = time.perf_counter()
    model.run(reference, annotated, batch_key="batch" if two else None, n_subtypes=n_types)
    called = annotated.obs["acsleuth_anomaly"].to_numpy(bool)
    labels = annotated.obs["acsleuth_subtype"].cat.codes.to_numpy()[called]
    record(
        "acsleuth run, K given", called, labels, time.perf_counter() - start, k=model_k(annotated)
    )
    x = prepare(target, genes=model.genes_).rows(np.arange(target.n_obs)).astype(np.float32)
    corrected = annotated.layers.get("acsleuth_corrected", annotated.obsm.get("acsleuth_corrected"))
    if called.sum() >= 3:
        cells = {"uncorrected": x[called], "corrected": np.asarray(corrected)[called]}
        for source, values in cells.items():
            start = time.perf_counter()
            km = kmeans_on_pcs(values, n_types, seed=seed)
            record(
                f"same calls: k-means on {SUBTYPE_PCS} PCs of {source}, K given",
                called,
                km,
                time.perf_counter() - start,
            )
        for n_pcs in (50, 30):
            start = time.perf_counter()
            config = replace(_subtype_config(model, quick), n_components=n_pcs)
            result = subtype_anomalies(
                torch.as_tensor(cells["corrected"]),
                generator=model.generator_,
                n_subtypes="auto",
                config=config,
                seed=seed,
                verbose=False,
            )
            record(
                f"same calls: acsleuth subtypes, auto ({n_pcs} PCs)",
                called,
                result.labels,
                time.perf_counter() - start,
                k=result.n_subtypes,
            )
    reference_x = prepare(reference, genes=model.genes_).rows(np.arange(reference.n_obs))
    start = time.perf_counter()
    _, peer, km = peer_pipeline(reference_x, x, int(truth.sum()), n_types, seed=seed)
    record(
        "peer: kNN in reference PCs (true ratio) + k-means, K given",
        peer,
        km,
        time.perf_counter() - start,
    )
    centred = batch_centred(x, target.obs["batch"].cat.codes.to_numpy(), ~peer)[peer]
    for n_subtypes in (n_types, "auto"):
        result = subtype_anomalies(
            torch.as_tensor(centred),
            generator=model.generator_,
            n_subtypes=n_subtypes,
            config=_subtype_config(model, quick),
            seed=seed,
            verbose=False,
        )
        how = "K given" if n_subtypes == n_types else "auto"
        record(
            f"peer calls: acsleuth subtypes, {how}", peer, result.labels, 0.0, k=result.n_subtypes
        )
    return out


def model_k(adata: AnnData) -> int:
    return int(adata.uns["acsleuth"]["n_subtypes"])


def _subtype_config(model: ACsleuth, quick: bool) -> SubtypeConfig:
    """The subtype settings ``model.subtype`` uses."""
    config = model.settings.subtype_config()
    return replace(config, n_init=5) if quick else config


def run(
    split: str,
    name: str,
    seed: int,
    *,
    quick: bool,
    batches: tuple[int, ...] = (1, 2),
    batch_scale: bool = True,
) -> list[dict]:
    held, ratio = SPLITS[split][name]
    effect = EFFECTS[seed % len(EFFECTS)]
    reference, two_batches = datasets.pbmc_holdout(
        held, anomaly_ratio=ratio, n_batches=2, batch_effect=effect, seed=seed
    )
    _, one_batch = datasets.pbmc_holdout(held, anomaly_ratio=ratio, seed=seed)  # same reference
    epochs = (
        {"prepare_epochs": 2, "train_epochs": 1, "style_epochs": 2, "subtype_epochs": 5}
        if quick
        else {}
    )
    start = time.perf_counter()
    model = ACsleuth(
        **epochs, batch_scale=batch_scale, device="cpu", random_state=seed, verbose=False
    ).fit(reference)
    fit_seconds = time.perf_counter() - start
    rows = []
    for n_batches, target in ((1, one_batch), (2, two_batches)):
        if n_batches not in batches:
            continue
        for row in evaluate_target(model, reference, target, seed=seed, quick=quick):
            rows.append(
                {
                    "split": split,
                    "scenario": name,
                    "types": len(held),
                    "seed": seed,
                    "batches": n_batches,
                    "effect": effect if n_batches == 2 else 0.0,
                    "anomalies": int(target.obs["is_anomaly"].sum()),
                    "fit_seconds": fit_seconds,
                    **row,
                }
            )
    return rows


def summarise(table: pd.DataFrame) -> None:
    columns = ["f1", "called/true", "min type recall", "nmi", "ari", "f1_nmi", "k"]
    for split, part in table.groupby("split", sort=False):
        print(f"\n== {split}: mean over scenarios and seeds, by number of batches")
        print(part.groupby(["batches", "method"], sort=False)[columns].mean().round(3).to_string())
        print(f"\n== {split}: F1 x NMI by scenario (two batches)")
        two = part[part["batches"] == 2]
        print(
            two.pivot_table(index="method", columns="scenario", values="f1_nmi", sort=False)
            .round(3)
            .to_string()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    parser.add_argument("--scenarios", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 scenario, 1 seed, few epochs")
    parser.add_argument("--out", default=None, help="CSV of per-run rows")
    parser.add_argument(
        "--batches", type=int, nargs="+", choices=(1, 2), default=[1, 2], help="targets to run"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument(
        "--no-batch-scale",
        action="store_true",
        help="batch_scale=False: the package before the per-gene batch scale (a same-run baseline)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for split in SPLITS if args.split == "all" else [args.split]:
        names = args.scenarios.split(",") if args.scenarios else list(SPLITS[split])
        names = [n for n in names if n in SPLITS[split]]
        for name in names[:1] if args.quick else names:
            for seed in range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds)):
                rows += run(
                    split,
                    name,
                    seed,
                    quick=args.quick,
                    batches=tuple(args.batches),
                    batch_scale=not args.no_batch_scale,
                )
                print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False), flush=True)
                if args.out:  # after every run: a long evaluation stopped early keeps its rows
                    pd.DataFrame(rows).to_csv(args.out, index=False)
        if args.quick:
            break
    summarise(pd.DataFrame(rows))


if __name__ == "__main__":
    main()
