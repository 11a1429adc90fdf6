"""Subtyping quality of stage IV against simpler clusterings of the same anomalies (issue 4).

For every scenario and seed, module I is trained on the reference; the target's true
anomalies (so detection errors do not interfere; no batch correction, the targets have one
batch) are then clustered with the true number of types: k-means on 50 principal components
of their expression ``x`` (an analyst's default), on module I's embedding ``z = E(x)``, on the
initial fused embedding ``z*`` (DESC with 0 epochs), DESC on ``z*`` (stage IV), and stage IV
with ``n_subtypes="auto"``. (The rows with an autoencoder warm-up of the encoder in
benchmarks/RESULTS.md, issue 4, came from a ``pretrain_epochs`` option removed in issue 15:
it did not help.) Prints NMI against the true types (mean and standard
deviation over seeds) and writes the per-run rows to a CSV.

    python benchmarks/eval_subtype.py --out benchmarks/eval_subtype.csv
    python benchmarks/eval_subtype.py --quick          # 1 seed, few epochs
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from sklearn.decomposition import PCA

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.data import prepare
from acsleuth.stages.subtype import SubtypeConfig, kmeans, subtype_anomalies

PBMC_HELD_OUT = ("CD19+ B", "Dendritic", "CD14+ Monocyte")


def scenario(name: str, seed: int) -> tuple[AnnData, AnnData]:
    if name == "synthetic":
        return datasets.synthetic(
            2000, 2000, 2000, n_types=6, n_anomaly_types=3, anomaly_ratio=0.15, seed=seed
        )
    return datasets.pbmc_holdout(PBMC_HELD_OUT, seed=seed)


def run(name: str, seed: int, *, quick: bool) -> list[dict]:
    reference, target = scenario(name, seed)
    epochs = {"prepare_epochs": 2, "train_epochs": 1} if quick else {}
    model = ACsleuth(**epochs, device="cpu", random_state=seed, verbose=False).fit(reference)
    rows = np.flatnonzero(target.obs["is_anomaly"].to_numpy())
    x = torch.as_tensor(prepare(target, genes=model.genes_).rows(rows))
    truth = target.obs["cell_type"].to_numpy()[rows]
    n_types = len(set(truth))
    config = replace(SubtypeConfig(), epochs=5) if quick else SubtypeConfig()
    gen = model.generator_
    with torch.no_grad():
        z = gen.encoder.eval()(x).numpy()

    def stage_iv(n_subtypes: int | str, cfg: SubtypeConfig):
        return subtype_anomalies(
            x, generator=gen, n_subtypes=n_subtypes, config=cfg, seed=seed, verbose=False
        )

    out = []

    def record(method: str, labels: np.ndarray, seconds: float, **extra) -> None:
        out.append(
            {
                "scenario": name,
                "seed": seed,
                "n_anomalies": len(rows),
                "method": method,
                "nmi": metrics.nmi(truth, labels),
                "ari": metrics.ari(truth, labels),
                "seconds": seconds,
                **extra,
            }
        )

    for method, features in (
        ("k-means on PCA(x)", lambda: PCA(50, random_state=seed).fit_transform(x.numpy())),
        ("k-means on z", lambda: z),
    ):
        start = time.perf_counter()
        labels = kmeans(features(), n_types, n_init=config.n_init, seed=seed).labels_
        record(method, labels, time.perf_counter() - start)
    for method, n_subtypes, cfg in (
        ("k-means on z*", n_types, replace(config, epochs=0)),
        ("DESC on z* (stage IV)", n_types, config),
        ("stage IV, auto k", "auto", config),
    ):
        start = time.perf_counter()
        result = stage_iv(n_subtypes, cfg)
        record(
            method,
            result.labels,
            time.perf_counter() - start,
            k=result.n_subtypes,
            epochs=len(result.history),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", default="synthetic,pbmc")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="CSV of per-run rows")
    args = parser.parse_args()
    rows = []
    for name in args.scenarios.split(","):
        for seed in range(1 if args.quick else args.seeds):
            rows += run(name, seed, quick=args.quick)
            print(pd.DataFrame(rows[-8:]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    summary = table.groupby(["scenario", "method"], sort=False).agg(
        nmi_mean=("nmi", "mean"),
        nmi_sd=("nmi", "std"),
        ari_mean=("ari", "mean"),
        k=("k", "mean"),
        epochs=("epochs", "mean"),
        seconds=("seconds", "mean"),
    )
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
