"""ACE's gene panels against five baselines on the same cells (issue 20, docs/method.md §8.3).

1. Simulation (``datasets.causal_panels``, clean and complex, 500 cells, 5 groups, 20 causal +
   100 dependent + 100 noise genes): kNN-Jaccard distance of each group's top-n genes for
   n = 1..40 and the recall of the 20 causal genes in each group's top 20 (mean over groups).
2. pbmc68k_reduced (``.raw``, 765 log-normalised genes, ``bulk_labels``): all 10 groups are
   explained (timed), the 5 with >= 50 cells evaluated: one-vs-rest RBF-SVM AUROC
   (``metrics.panel_auroc``) and redundancy of the top 1 %, 2 %, 5 % of the genes and of
   the top 8 and 16, and kNN-Jaccard at 8 and 16 genes.
3. Use case: ACsleuth on a three-type hold-out of pbmc68k_reduced; its subtypes explained
   by ``tl.explain_subtypes`` (DESC's Student-t head on the principal components).

Methods: ACE (``tl.explain_groups``: ``ace`` with the defaults, ``ace-nearest`` with the
nearest-group panel alone (``panel="nearest"``, the default before the fused panel), ``ace-pca``
with the 30 principal components that were the default before the whitened embedding), Wilcoxon and t-test and logreg
(``sc.tl.rank_genes_groups``), gradient saliency on ACE's neuralised k-means, random genes.

Development and report parts: ACE's settings were chosen on the simulation's seeds 1 and 2 and
on the pbmc groups ``DEV_GROUPS``; the simulation is reported for ``--seed`` (0) and pbmc for
all five groups and for the three held-out ones separately.

    OMP_NUM_THREADS=1 python benchmarks/eval_explain.py --out benchmarks/explain
    OMP_NUM_THREADS=1 python benchmarks/eval_explain.py --parts pbmc   # one part
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData

import acsleuth
from acsleuth import metrics
from acsleuth.stages import explain as ace

METHODS = ("ace", "ace-nearest", "ace-pca", "wilcoxon", "t-test", "logreg", "saliency", "random")
SIM_NS = range(1, 41)
PBMC_SIZES = {"1%": 8, "2%": 15, "5%": 38, "top8": 8, "top16": 16}
HELD_OUT = ("CD19+ B", "CD14+ Monocyte", "CD56+ NK")
DEV_GROUPS = ("CD4+/CD25 T Reg", "CD8+ Cytotoxic T")


def rankings(
    adata: AnnData, groupby: str, config: ace.ExplainConfig, seed: int
) -> tuple[dict, float]:
    """``{method: {group: gene indices, best first}}`` and ACE's seconds."""
    genes = list(map(str, adata.var_names))
    out: dict[str, dict] = {}
    start = time.perf_counter()
    acsleuth.tl.explain_groups(
        adata, groupby=groupby, n_genes=len(genes), config=config, use_raw=False
    )
    seconds = time.perf_counter() - start
    names = adata.uns["acsleuth_explain"]["names"]
    groups = list(names.dtype.names)
    out["ace"] = {g: np.array([genes.index(n) for n in names[g]]) for g in groups}
    acsleuth.tl.explain_groups(
        adata,
        groupby=groupby,
        n_genes=len(genes),
        config=replace(config, panel="nearest"),
        use_raw=False,
        key_added="nearest",
    )
    names = adata.uns["nearest_explain"]["names"]
    out["ace-nearest"] = {g: np.array([genes.index(n) for n in names[g]]) for g in groups}
    acsleuth.tl.explain_groups(
        adata,
        groupby=groupby,
        embedding="pca",
        n_genes=len(genes),
        config=config,
        use_raw=False,
        key_added="pca",
    )
    names = adata.uns["pca_explain"]["names"]
    out["ace-pca"] = {g: np.array([genes.index(n) for n in names[g]]) for g in groups}
    for method in ("wilcoxon", "t-test", "logreg"):
        scratch = adata.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.rank_genes_groups(
                scratch,
                groupby,
                method=method,
                n_genes=len(genes),
                use_raw=False,
                **({"max_iter": 1000} if method == "logreg" else {}),
            )
        ranked = scratch.uns["rank_genes_groups"]["names"]
        out[method] = {g: np.array([genes.index(n) for n in ranked[g]]) for g in groups}
    x = np.asarray(adata.X, dtype=np.float32)
    codes = adata.obs[groupby].cat.codes.to_numpy()
    emb = ace.whitened_embedding(x, config.whiten_floor)
    z = emb(torch.as_tensor(x)).numpy()
    model = ace.cluster_model(
        emb, ace.kmeans_head(z, codes, ace.group_centroids(z, codes, len(groups)), config.beta)
    )
    out["saliency"] = {
        g: np.argsort(-ace.saliency(x, codes, model, k), kind="stable")
        for k, g in enumerate(groups)
    }
    rng = np.random.default_rng(seed)
    out["random"] = {g: rng.permutation(len(genes)) for g in groups}
    return out, seconds


def simulation(complex_: bool, config: ace.ExplainConfig, seed: int) -> dict:
    adata = acsleuth.datasets.causal_panels(500, 5, complex=complex_, seed=seed)
    ranks, seconds = rankings(adata, "group", config, seed)
    x, labels = adata.X, adata.obs["group"].astype(str).to_numpy()
    causal = set(np.flatnonzero((adata.var["role"] == "causal").to_numpy()))
    result = {"ace_seconds": seconds, "curve": {}, "recall20": {}}
    for method, by_group in ranks.items():
        result["curve"][method] = [
            metrics.knn_jaccard_distance(x, labels, {g: r[:n] for g, r in by_group.items()})
            for n in SIM_NS
        ]
        result["recall20"][method] = float(
            np.mean([len(causal & set(r[:20])) / 20 for r in by_group.values()])
        )
    all_causal = {g: sorted(causal) for g in by_group}
    result["causal_only_jaccard"] = metrics.knn_jaccard_distance(x, labels, all_causal)
    return result


def pbmc(config: ace.ExplainConfig, seed: int) -> dict:
    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    adata.X = adata.X.toarray()
    ranks, seconds = rankings(adata, "bulk_labels", config, seed)
    x, labels = adata.X, adata.obs["bulk_labels"].astype(str).to_numpy()
    evaluated = [g for g in ranks["ace"] if (labels == g).sum() >= 50]
    held_out = [g for g in evaluated if g not in DEV_GROUPS]
    result = {"ace_seconds_10_groups": seconds, "groups": evaluated, "held_out_groups": held_out}
    result["flipped"] = {g: float(v) for g, v in adata.uns["acsleuth_explain"]["flipped"].items()}
    result["table"], result["table_held_out"], result["per_group"] = {}, {}, {}
    for method, by_group in ranks.items():
        per_group = {
            g: {
                f"{metric}_{name}": float(
                    metrics.panel_auroc(x, labels, g, by_group[g][:n], seed=seed)
                    if metric == "auroc"
                    else metrics.panel_redundancy(x, by_group[g][:n])
                )
                for name, n in PBMC_SIZES.items()
                for metric in ("auroc", "redundancy")
            }
            for g in evaluated
        }
        result["per_group"][method] = per_group
        keys = list(per_group[evaluated[0]])
        row = {k: float(np.mean([per_group[g][k] for g in evaluated])) for k in keys}
        result["table_held_out"][method] = {
            k: float(np.mean([per_group[g][k] for g in held_out])) for k in keys
        }
        for n in (8, 16):
            panels = {g: r[:n] for g, r in by_group.items()}
            row[f"jaccard_{n}"] = metrics.knn_jaccard_distance(x, labels, panels)
        result["table"][method] = row
        print(method, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return result


def use_case(config: ace.ExplainConfig, seed: int) -> dict:
    reference, target = acsleuth.datasets.pbmc_holdout(HELD_OUT, seed=seed)
    model = acsleuth.ACsleuth(device="cpu", random_state=seed, verbose=False)
    model.run(reference, target, n_subtypes=len(HELD_OUT))
    acsleuth.tl.explain_subtypes(target, model, n_genes=10, config=config)
    uns = target.uns["acsleuth_explain"]
    subtype = target.obs["acsleuth_subtype"]
    rows = {}
    for g in uns["names"].dtype.names:
        members = target.obs["cell_type"][subtype == g].astype(str)
        rows[g] = {
            "cells": len(members),
            "majority": members.value_counts().index[0],
            "majority_fraction": float(members.value_counts(normalize=True).iloc[0]),
            "flipped": float(uns["flipped"][g]),
            "panel": [
                f"{n}{'+' if d > 0 else '-'}"
                for n, d in zip(uns["names"][g][:8], uns["direction"][g][:8], strict=True)
            ],
        }
    return {
        "head": uns["params"]["head"],
        "embedding_r2": uns["params"]["embedding_r2"],
        "subtypes": rows,
    }


def timing(config: ace.ExplainConfig, repeats: int = 3) -> dict:
    """Wall and CPU seconds of ``tl.explain_groups`` on pbmc68k_reduced's 10 groups."""
    adata = sc.datasets.pbmc68k_reduced()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        acsleuth.tl.explain_groups(adata, groupby="bulk_labels", config=config)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"groups": 10, "wall_s": wall, "cpu_s": cpu, "torch_threads": torch.get_num_threads()}


def figure(results: dict, path: Path) -> None:
    """The simulation curves (clean, complex) and the pbmc panel metrics, whichever of the
    two parts ``results`` holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    simulations = [name for name in ("clean", "complex") if f"simulation_{name}" in results]
    with_pbmc = "table" in results.get("pbmc", {}) and "ace-pca" in results["pbmc"]["table"]
    n_panels = len(simulations) + (2 if with_pbmc else 0)
    if n_panels == 0:
        return
    fig, axes = plt.subplots(1, n_panels, figsize=(4.5 * n_panels, 4), squeeze=False)
    axes = list(axes[0])
    for ax, name in zip(axes, simulations, strict=False):
        sim = results[f"simulation_{name}"]
        for method in METHODS:
            ax.plot(
                list(SIM_NS),
                sim["curve"][method],
                label=method,
                linewidth=2 if method == "ace" else 1,
            )
        ax.axhline(
            sim["causal_only_jaccard"], color="grey", linestyle="--", label="20 causal genes"
        )
        ax.set(title=f"simulation ({name})", xlabel="top-n genes", ylabel="kNN-Jaccard distance")
    if with_pbmc:
        table = results["pbmc"]["table"]
        sizes = ["top8", "2%", "top16", "5%"]
        for ax, metric in zip(axes[len(simulations) :], ("auroc", "redundancy"), strict=True):
            for method in METHODS:
                ax.plot(
                    [PBMC_SIZES[s] for s in sizes],
                    [table[method][f"{metric}_{s}"] for s in sizes],
                    marker="o",
                    label=method,
                    linewidth=2 if method == "ace" else 1,
                )
            ax.set(title=f"pbmc68k_reduced: {metric}", xlabel="panel size (genes)", ylabel=metric)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="benchmarks/explain", help="prefix of the .json and .png written"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["simulation", "pbmc", "use_case"],
        choices=["simulation", "pbmc", "use_case", "timing"],
        help="what to run; each part writes OUT_PART.json; the figure draws the first two",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ace.ExplainConfig(seed=args.seed)
    print("ExplainConfig:", config, flush=True)
    if "simulation" in args.parts:
        results = {"config": config.__dict__}
        for complex_ in (False, True):
            name = "complex" if complex_ else "clean"
            results[f"simulation_{name}"] = sim = simulation(complex_, config, args.seed)
            print(name, "recall@20", sim["recall20"], f"ACE {sim['ace_seconds']:.1f} s", flush=True)
        Path(f"{args.out}_simulation.json").write_text(json.dumps(results, indent=1))
    if "pbmc" in args.parts:
        results = {"config": config.__dict__, "pbmc": pbmc(config, args.seed)}
        print(
            "pbmc ACE seconds (10 groups):",
            round(results["pbmc"]["ace_seconds_10_groups"], 1),
            flush=True,
        )
        Path(f"{args.out}_pbmc.json").write_text(json.dumps(results, indent=1))
    if "use_case" in args.parts:
        results = {"config": config.__dict__, "use_case": use_case(config, args.seed)}
        print(json.dumps(results["use_case"], indent=1), flush=True)
        Path(f"{args.out}_use_case.json").write_text(json.dumps(results, indent=1))
    if "timing" in args.parts:
        results = {"config": config.__dict__, "timing": timing(config)}
        print("timing:", results["timing"], flush=True)
        Path(f"{args.out}_timing.json").write_text(json.dumps(results, indent=1))
    parts = [Path(f"{args.out}_{part}.json") for part in ("simulation", "pbmc")]
    parts = [p for p in parts if p.exists()]
    if parts:
        merged = {k: v for p in parts for k, v in json.loads(p.read_text()).items()}
        figure(merged, Path(f"{args.out}.png"))
        print(f"wrote {args.out}.png")


if __name__ == "__main__":
    main()
