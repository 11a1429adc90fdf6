"""Evaluation suite that chooses the default anomaly score by evidence (issue 3).

For every scenario (held-out cell types of pbmc68k_reduced at several anomaly ratios, and
synthetic data) and seed, module I is trained once; every score variant is then computed
from the same reconstruction, so variants differ only in the scorer. Prints a table of mean
AUROC / AP / F1 (top-n at the true ratio) per variant and group of scenarios, and writes the
per-run rows to a CSV.

    python benchmarks/eval_detection.py --out benchmarks/eval_detection.csv
    python benchmarks/eval_detection.py --quick          # 2 scenarios, 1 seed, few epochs
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import pandas as pd
import torch

from acsleuth import ACsleuth, datasets, metrics
from acsleuth.data import prepare
from acsleuth.stages.mmd import ScorerConfig, fit_predictor, predict_logits

SINGLE = ["CD19+ B", "CD14+ Monocyte", "CD56+ NK", "CD8+ Cytotoxic T", "CD4+/CD25 T Reg"]
MULTI = [
    ("CD19+ B", "CD56+ NK"),
    ("CD14+ Monocyte", "CD8+ Cytotoxic T"),
    ("CD19+ B", "CD14+ Monocyte", "CD56+ NK"),
    ("Dendritic", "CD34+"),
]
RATIO_SWEEPS = {("CD19+ B",): [0.05, 0.2, 0.6], ("CD14+ Monocyte", "CD56+ NK"): [0.05, 0.4, 0.6]}

PAPER = ScorerConfig(epochs=20, kernel="linear", gamma="interp", batch_size=None)
MB = replace(PAPER, batch_size=128)
WARM = replace(MB, warm_epochs=10)
WARM_ANCHORS = replace(WARM, kernel="gaussian")
# name -> (scorer config, whether the true ratio is given, whether reference anchors are used).
# The "+ supervision" rows of benchmarks/RESULTS.md (issue 3) came from a ScorerConfig option
# removed in issue 15: it did not beat the default.
VARIANTS: dict[str, tuple[ScorerConfig, bool, bool]] = {
    "mmd paper (full pass, linear, soft n)": (PAPER, False, False),
    "mmd reference gamma, true ratio": (replace(PAPER, gamma="reference"), True, False),
    "warm start only + anchors": (replace(WARM, epochs=0), False, True),
    "warm start only + anchors, true-ratio pseudo-labels": (replace(WARM, epochs=0), True, True),
    "mmd gauss warm anchors soft": (WARM_ANCHORS, False, True),
    "mmd gauss warm anchors soft, 5 mmd epochs": (replace(WARM_ANCHORS, epochs=5), False, True),
}


def scenarios(quick: bool) -> list[dict]:
    out = [{"group": "single", "held_out": (t,), "ratio": None} for t in SINGLE]
    out += [{"group": "multi", "held_out": t, "ratio": None} for t in MULTI]
    out += [{"group": "ratio", "held_out": held, "ratio": r}
            for held, ratios in RATIO_SWEEPS.items() for r in ratios]
    out += [{"group": "synthetic", "held_out": (), "ratio": r} for r in (0.05, 0.3)]
    return out[:1] + out[5:6] if quick else out


def load(scenario: dict, seed: int):
    if scenario["group"] == "synthetic":
        return datasets.synthetic(1000, 1000, 1000, anomaly_ratio=scenario["ratio"], seed=seed)
    return datasets.pbmc_holdout(list(scenario["held_out"]), anomaly_ratio=scenario["ratio"],
                                 seed=seed)


def run_one(scenario: dict, seed: int, epochs: tuple[int, int, int]) -> list[dict]:
    reference, target = load(scenario, seed)
    truth = target.obs["is_anomaly"].to_numpy()
    ratio = float(truth.mean())
    model = ACsleuth(prepare_epochs=epochs[0], train_epochs=epochs[1], random_state=seed,
                     verbose=False, device="cpu")
    t0 = time.perf_counter()
    model.fit(reference)
    fit_s = time.perf_counter() - t0
    source = prepare(target, genes=model.genes_, name="target")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        scores, residuals, _ = model.reconstruct(source, keep_residuals=True)
    results = {name: values.numpy() for name, values in scores.items()}
    for name, (config, known_ratio, anchored) in VARIANTS.items():
        config = replace(config, epochs=min(config.epochs, epochs[2]))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            predictor = fit_predictor(residuals, ratio=ratio if known_ratio else None, config=config,
                                      ranking=scores["scaled"], seed=seed, verbose=False,
                                      anchors=model.anchors_ if anchored else None)
        results[name] = predict_logits(predictor, residuals).numpy()
    label = "+".join(scenario["held_out"]) or "synthetic"
    rows = []
    for name, values in results.items():
        report = metrics.detection_report(truth, values)
        rows.append({"group": scenario["group"], "held_out": label, "ratio": round(ratio, 3),
                     "seed": seed, "score": name, "fit_s": fit_s, **report})
    return rows


def target_check(seeds: range, held_out: str = "CD19+ B") -> None:
    """The issue's target: package defaults end to end (``ACsleuth().evaluate``), 3 seeds."""
    rows = []
    for seed in seeds:
        reference, target = datasets.pbmc_holdout(held_out, seed=seed)
        truth = target.obs["is_anomaly"].to_numpy()
        start = time.perf_counter()
        model = ACsleuth(random_state=seed, verbose=False).fit(reference)
        result = model.evaluate(target)
        rows.append({"seed": seed, **metrics.detection_report(truth, result.score, result.anomaly),
                     "called": int(result.anomaly.sum()), "anomalies": int(truth.sum()),
                     "seconds": time.perf_counter() - start})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"held out {held_out!r}, package defaults, mean of {len(rows)} seeds:")
    print(table.mean().round(4).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs=3, default=(50, 20, 20),
                        metavar=("PREPARE", "TRAIN", "SCORE"))
    parser.add_argument("--out", default="benchmarks/eval_detection.csv")
    parser.add_argument("--target-check", action="store_true",
                        help="package defaults end to end on held-out CD19+ B cells, then exit")
    parser.add_argument("--summarize", metavar="CSV", help="print the table of an earlier run and exit")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.target_check:
        target_check(range(args.seeds))
        return
    if args.summarize:
        print(markdown_summary(pd.read_csv(args.summarize)))
        return
    epochs = (5, 2, 5) if args.quick else tuple(args.epochs)
    seeds = range(1 if args.quick else args.seeds)
    rows = []
    start = time.perf_counter()
    for scenario in scenarios(args.quick):
        for seed in seeds:
            rows += run_one(scenario, seed, epochs)
            print(f"[{time.perf_counter() - start:7.1f} s] {scenario['group']} "
                  f"{'+'.join(scenario['held_out'])} ratio={scenario['ratio']} seed={seed}",
                  flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
    print(markdown_summary(pd.DataFrame(rows)))
    print(f"total {time.perf_counter() - start:.0f} s")


def markdown_summary(table: pd.DataFrame) -> str:
    """Mean AUROC / AP / F1 per score and scenario group (and over all runs), best AUROC first."""
    metrics_ = ["auroc", "ap", "f1_at_ratio"]
    groups = [g for g in ("single", "multi", "ratio", "synthetic") if g in set(table["group"])]
    means = table.groupby(["score", "group"])[metrics_].mean()
    overall = table.groupby("score")[metrics_].mean().sort_values("auroc", ascending=False)
    header = ["score"] + [f"{g} AUROC / AP / F1" for g in groups] + ["all AUROC / AP / F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for score, row in overall.iterrows():
        cells = [" / ".join(f"{means.loc[(score, g), m]:.3f}" for m in metrics_) for g in groups]
        cells.append(" / ".join(f"{row[m]:.3f}" for m in metrics_))
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    runs = table.groupby("group")[["held_out", "ratio", "seed"]].apply(len) // table["score"].nunique()
    lines.append("")
    lines.append("runs per group: " + ", ".join(f"{g} {runs[g]}" for g in groups))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
