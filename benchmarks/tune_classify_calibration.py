"""The choice of CellTypeClassifier's temperature fit (issue 18): ECE on the development splits
of pbmc68k_reduced (split as in eval_classify.py), one classifier per split.

    python benchmarks/tune_classify_calibration.py --set calibration_folds=0   # validation only
    python benchmarks/tune_classify_calibration.py                             # the default
    python benchmarks/tune_classify_calibration.py --seeds 3 4 5   # more development seeds

Development splits: held-out types 0 T Reg, 2 CD4+ Memory, 4 CD8+ naive cytotoxic,
5 CD14+ Monocyte, 8 CD56+ NK (``datasets.PBMC_CELL_TYPES`` indices), seeds 0 and 1; seeds
3 and up are not in eval_classify.py's runs either. Per split: accuracy and ECE on the
in-distribution target cells (as eval_classify.py), the fitted temperature, the temperature of
least NLL on those target cells ("oracle", a diagnosis only: the best one temperature can do),
the ECE there, and the "floor": the mean ECE of a perfectly calibrated classifier with the same
confidences (correct drawn as Bernoulli(confidence), 200 draws), which equal-width bins on
~300 cells do not reach 0 for.
"""

from __future__ import annotations

import numpy as np
import torch
from tune_classify_ood import development_fits

from acsleuth import CellTypeClassifier, metrics
from acsleuth.stages.classify import fit_temperature


def calibration(model: CellTypeClassifier, reference, target, seed: int) -> dict[str, float]:
    """Accuracy, ECE, temperatures, oracle ECE and floor of one split."""
    result = model.classify(target)
    known = ~target.obs["is_anomaly"].to_numpy()
    truth = target.obs["cell_type"].astype(str).to_numpy()[known]
    codes = np.searchsorted(np.asarray(model.classes_), truth)
    logits = np.log(result.proba[known]) * model.temperature_  # logits up to a per-cell shift
    oracle = fit_temperature(logits.astype(np.float32), codes)

    def ece(temperature: float) -> tuple[float, np.ndarray]:
        proba = torch.softmax(torch.from_numpy(logits) / temperature, 1).numpy()
        confidence = proba.max(1)
        return metrics.ece(proba.argmax(1) == codes, confidence), confidence

    fitted, confidence = ece(model.temperature_)
    rng = np.random.default_rng(seed)
    floor = np.mean([metrics.ece(rng.random(confidence.size) < confidence, confidence)
                     for _ in range(200)])  # fmt: skip
    return {
        "accuracy": float((result.labels[known] == truth).mean()),
        "ece": fitted,
        "T": model.temperature_,
        "oracle T": oracle,
        "oracle ECE": ece(oracle)[0],
        "floor": float(floor),
        "auroc": metrics.auroc(~known, result.ood_score),
    }


def main() -> None:
    args, fits = development_fits(__doc__.splitlines()[0])
    rows = []
    for seed, model, reference, target in fits:
        rows.append(calibration(model, reference, target, seed))
        print(seed, {k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
    means = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
    print(f"{args.settings}; types {args.types} x seeds {args.seeds}: means {means}")


if __name__ == "__main__":
    main()
