"""The tuning runs behind CellTypeClassifier's defaults (issue 18): one seed on development
held-out types of pbmc68k_reduced (split as in eval_classify.py), one line per type.

    python benchmarks/tune_classify.py --types 0 5 6 --set widths=256, blocks=1, dropout=0.5

``--types`` index ``datasets.PBMC_CELL_TYPES`` (0 CD4+/CD25 T Reg, 5 CD14+ Monocyte, 6 CD19+ B
are the development types); ``--set`` takes CellTypeClassifier settings as NAME=VALUE (Python
literals; ``256,`` is a tuple).
"""

from __future__ import annotations

import argparse
import ast
import warnings

import torch

from acsleuth import CellTypeClassifier, datasets, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, nargs="+", default=[0, 5, 6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    settings = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.set)}
    print(settings)
    for index in args.types:
        held = datasets.PBMC_CELL_TYPES[index]
        reference, target = datasets.pbmc_holdout(held, seed=args.seed)
        model = CellTypeClassifier(random_state=args.seed, verbose=False, device="cpu", **settings)
        result = model.fit(reference, label_key="cell_type").classify(target)
        unknown = target.obs["is_anomaly"].to_numpy()
        correct = (result.labels == target.obs["cell_type"].astype(str).to_numpy())[~unknown]
        print(
            f"{held:30s} auroc energy {metrics.auroc(unknown, result.ood_score):.3f}  max-softmax "
            f"{metrics.auroc(unknown, -result.confidence):.3f}  accuracy {correct.mean():.3f}  ece "
            f"{metrics.ece(correct, result.confidence[~unknown]):.3f}  best epoch {model.best_epoch_}",
            flush=True,
        )


if __name__ == "__main__":
    main()
