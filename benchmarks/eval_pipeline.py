"""F1 x NMI of the whole pipeline on multi-type, two-batch PBMC scenarios (issue 4).

Each scenario holds some cell types out of scanpy's pbmc68k_reduced reference and splits the
target over two batches, the second given a synthetic per-gene batch effect
(:func:`acsleuth.datasets.pbmc_holdout`). Per scenario and seed, module I is fitted once;
then, on the same cells:

- detection with and without the batch key (per-batch residual centring), F1 at the true
  anomaly ratio (SPEC §6) and F1 of the calls made without it;
- subtyping of the called anomalies (top-n at the true ratio, batch-centred) with
  ``n_subtypes="auto"``: DESC on principal components (the default) or on the fusion
  encoder's ``z*`` (SPEC §4), each of three inputs: the corrected expression (anomalies
  shifted by their batch's mean correction, the default), the style generator's output
  for every cell (SPEC §3), and the uncorrected expression;
- peers: an isolation forest and a local-outlier-factor novelty detector on the reference's
  principal components, each followed by plain k-means with the true number of types.

NMI is measured on true anomalies among the called ones, against their true types; F1 x NMI
is the paper's summary.

    python benchmarks/eval_pipeline.py --out benchmarks/eval_pipeline.csv
    python benchmarks/eval_pipeline.py --quick            # 1 seed, 1 scenario
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from itertools import product

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.data import prepare
from acsleuth.stages.subtype import SubtypeConfig, kmeans, subtype_anomalies

SCENARIOS = {
    "B+Dendritic": ("CD19+ B", "Dendritic"),
    "B+Mono+NK": ("CD19+ B", "CD14+ Monocyte", "CD56+ NK"),
    "Mono+NK": ("CD14+ Monocyte", "CD56+ NK"),
    "CD8+B": ("CD8+ Cytotoxic T", "CD19+ B"),
}
ANOMALY_RATIO = 0.3
N_PCS = 30


def pcs(x: np.ndarray, seed: int) -> np.ndarray:
    return PCA(min(N_PCS, *x.shape), random_state=seed).fit_transform(x)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    called = np.zeros(len(scores), dtype=bool)
    called[np.argsort(-scores, kind="stable")[:n]] = True
    return called


def run(name: str, seed: int, *, effect: float, epochs: dict) -> list[dict]:
    reference, target = datasets.pbmc_holdout(
        SCENARIOS[name], anomaly_ratio=ANOMALY_RATIO, n_batches=2, batch_effect=effect, seed=seed
    )
    truth = target.obs["is_anomaly"].to_numpy(bool)
    types = target.obs["cell_type"].astype(str).to_numpy()
    n_true, n_types = int(truth.sum()), len(set(types[truth]))
    out: list[dict] = []

    def record(method: str, called: np.ndarray, labels: np.ndarray | None, seconds: float) -> None:
        row = {"scenario": name, "seed": seed, "effect": effect, "method": method,
               "f1": metrics.f1(truth, called), "seconds": seconds}
        if labels is not None:
            subtype = np.full(len(truth), None, dtype=object)
            subtype[called] = labels
            row.update(metrics.subtype_scores(truth, called, types, subtype))
        out.append(row)

    start = time.perf_counter()
    model = ACsleuth(**epochs, device="cpu", random_state=seed, verbose=False).fit(reference)
    fit_seconds = time.perf_counter() - start
    x = prepare(target, genes=model.genes_).rows(np.arange(target.n_obs)).astype(np.float32)
    called = {}
    for label, key in (("ignoring batches", None), ("batch-centred", "batch")):
        start = time.perf_counter()
        result = model.evaluate(target, batch_key=key)
        called[key] = top_n(result.score, n_true)
        record(f"detect {label}, calls", result.anomaly, None, time.perf_counter() - start)
        record(f"detect {label}, top-n", called[key], None, fit_seconds)
    anomaly = called["batch"]
    start = time.perf_counter()
    corrected = {
        how: model.correct(target, reference, normal=~anomaly, batch_key="batch", anomalies=how)
        for how in ("shift", "generator")
    }
    correct_seconds = (time.perf_counter() - start) / 2
    fusion = SubtypeConfig(embedding="fusion", epochs=model.params["subtype_epochs"])
    pca = replace(fusion, embedding="pca")
    inputs = {"corrected": corrected["shift"], "generator output": corrected["generator"],
              "uncorrected": x}
    for (embedding, config), (source, values) in product(
        (("PCA", pca), ("fusion", fusion)), inputs.items()
    ):
        start = time.perf_counter()
        labels = subtype_anomalies(
            torch.as_tensor(values[anomaly]), generator=model.generator_, config=config,
            seed=seed, verbose=False,
        ).labels
        seconds = time.perf_counter() - start + correct_seconds * (source != "uncorrected")
        record(f"{embedding} + DESC on {source}", anomaly, labels, seconds)
    reference_x = prepare(reference, genes=model.genes_).rows(np.arange(reference.n_obs))
    pca = PCA(min(N_PCS, *reference_x.shape), random_state=seed).fit(reference_x)
    for method, detector in (
        ("isolation forest + k-means", IsolationForest(random_state=seed)),
        ("LOF + k-means", LocalOutlierFactor(novelty=True)),
    ):
        start = time.perf_counter()
        detector.fit(pca.transform(reference_x))
        peer_called = top_n(-detector.score_samples(pca.transform(x)), n_true)
        labels = kmeans(pcs(x[peer_called], seed), n_types, seed=seed).labels_
        record(method, peer_called, labels, time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--batch-effect", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 scenario, few epochs")
    parser.add_argument("--out", default=None, help="CSV of per-run rows")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scenarios = args.scenarios.split(",")[:1] if args.quick else args.scenarios.split(",")
    epochs = (
        {"prepare_epochs": 2, "train_epochs": 1, "style_epochs": 2, "subtype_epochs": 5}
        if args.quick else {}
    )
    rows = []
    for name in scenarios:
        for seed in range(1 if args.quick else args.seeds):
            rows += run(name, seed, effect=args.batch_effect, epochs=epochs)
            print(pd.DataFrame(rows[-10:]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    summary = table.groupby(["method"], sort=False)[["f1", "nmi", "f1_nmi", "seconds"]].mean()
    print(summary.round(3).to_string())
    print(table.pivot_table(index="method", columns="scenario", values="f1_nmi", sort=False)
          .round(3).to_string())


if __name__ == "__main__":
    main()
