"""The choice of CellTypeClassifier's OOD score (issue 18): candidate scores on the development
splits of pbmc68k_reduced (split as in eval_classify.py), one classifier per split.

    python benchmarks/tune_classify_ood.py                       # CLAMS defaults, seeds 0 1
    python benchmarks/tune_classify_ood.py --seeds 0 1 3 4 5     # the choice of the weights
    python benchmarks/tune_classify_ood.py --set generative=False  # the CE-only network

Development splits: held-out types 0 T Reg, 2 CD4+ Memory, 4 CD8+ naive cytotoxic,
5 CD14+ Monocyte, 8 CD56+ NK (``datasets.PBMC_CELL_TYPES`` indices), seeds 0 and 1. Every
score is oriented higher = more OOD; "z(a) + w z(b)" standardises each term with the
validation cells' mean and standard deviation (as ``OODIndex.score``). kNN: mean distance to
the 10 nearest training cells, in all standardised genes ("genes") or in the first d
principal components of the standardised training cells ("pcD"); type distance ("typeK"):
the mean distance in 200 components to the K nearest training cells of the predicted type, in
units of that type's leave-one-out spread (``OODIndex.type_distances``).
"""

from __future__ import annotations

import argparse
import ast
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from acsleuth import CellTypeClassifier, datasets, metrics
from acsleuth.data import prepare
from acsleuth.stages.classify import reference_labels, validation_split
from acsleuth.stages.classify_ood import fit_ood_index
from acsleuth.stages.neighbours import knn_distance

K = 10
WEIGHT_GRID = [  # around the chosen (1, 1, 8) of energy+softmax+knn (seeds 0, 1, 3, 4, 5)
    (we, ws, wd) for we in (0.0, 1.0, 2.0) for ws in (0.0, 1.0, 2.0) for wd in (2.0, 4.0, 8.0, 16.0)
]
TYPE_KS = (10, 20, 30)  # the type distance's neighbours and weight beside (1, 1, 8): the
TYPE_WEIGHTS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)  # energy+softmax+knn+type choice


def candidates(model: CellTypeClassifier, reference, target, seed: int) -> dict[str, np.ndarray]:
    """Every candidate score of the target cells."""
    codes, _ = reference_labels(reference, "cell_type")
    train, val = validation_split(codes, model.config.validation_fraction, seed)
    net = model.network_
    with torch.inference_mode():
        z_ref = net.standardise(
            torch.from_numpy(prepare(reference).with_genes(model.genes_).rows(slice(None)))
        )
        z_tgt = net.standardise(
            torch.from_numpy(prepare(target, genes=model.genes_).rows(slice(None)))
        )
        energy = [-torch.logsumexp(net.logits(z), 1).numpy() for z in (z_tgt, z_ref[val])]
        softmax = [
            -torch.softmax(net.logits(z) / model.temperature_, 1).max(1).values.numpy()
            for z in (z_tgt, z_ref[val])
        ]
    terms = {"energy": energy, "max-softmax": softmax}
    terms["genes"] = [knn_distance(z, z_ref[train], K).numpy() for z in (z_tgt, z_ref[val])]
    for d in (50, 200):
        index = fit_ood_index(z_ref[train], n_components=d, k=K, weights=(0.0, 0.0, 1.0, 0.0))
        terms[f"pc{d}"] = [index.distances(z).numpy() for z in (z_tgt, z_ref[val])]
    for k in TYPE_KS:
        index = fit_ood_index(
            z_ref[train],
            n_components=200,
            k=K,
            weights=(0.0, 0.0, 0.0, 1.0),
            codes=torch.as_tensor(codes[train]),
            n_types=len(model.classes_),
            type_k=k,
        )
        with torch.inference_mode():
            terms[f"type{k}"] = [
                index.type_distances(z, net.logits(z).argmax(1)).numpy()
                for z in (z_tgt, z_ref[val])
            ]
    z = {n: (t - v.mean()) / v.std() for n, (t, v) in terms.items()}
    scores = {n: t for n, (t, _) in terms.items()}
    for combo in ("energy+pc50", "energy+pc200", "energy+genes", "genes+pc50", "energy+genes+pc50"):
        scores[f"z sum {combo}"] = sum(z[n] for n in combo.split("+"))
    scores["z(energy) + 2 z(pc200) (energy+knn)"] = z["energy"] + 2 * z["pc200"]
    scores["z(max-softmax) + z(genes)"] = z["max-softmax"] + z["genes"]
    for we, ws, wd in WEIGHT_GRID:  # (energy, max-softmax, pc200): the energy+softmax+knn choice
        scores[f"{we:g} z(energy) + {ws:g} z(max-softmax) + {wd:g} z(pc200)"] = (
            we * z["energy"] + ws * z["max-softmax"] + wd * z["pc200"]
        )
    base = z["energy"] + z["max-softmax"] + 8 * z["pc200"]
    for k in TYPE_KS:
        scores[f"z(type{k})"] = z[f"type{k}"]
        for wt in TYPE_WEIGHTS:
            scores[f"1 : 1 : 8 + {wt:g} z(type{k})"] = base + wt * z[f"type{k}"]
    return scores


def development_fits(description: str) -> tuple[argparse.Namespace, Iterator[tuple]]:
    """The command line (``--types``, ``--seeds``, ``--set``; ``args.settings``) and, lazily,
    ``(seed, model, reference, target)`` of one classifier fitted per development split."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--types", type=int, nargs="+", default=[0, 2, 4, 5, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    args.settings = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.set)}

    def fits() -> Iterator[tuple]:
        for seed in args.seeds:
            for index in args.types:
                held = datasets.PBMC_CELL_TYPES[index]
                reference, target = datasets.pbmc_holdout(held, seed=seed)
                model = CellTypeClassifier(
                    random_state=seed, verbose=False, device="cpu", **args.settings
                )
                yield seed, model.fit(reference, label_key="cell_type"), reference, target

    return args, fits()


def main() -> None:
    args, fits = development_fits(__doc__.splitlines()[0])
    table: dict[str, list[float]] = {}
    for seed, model, reference, target in fits:
        unknown = target.obs["is_anomaly"].to_numpy()
        for name, score in candidates(model, reference, target, seed).items():
            table.setdefault(name, []).append(metrics.auroc(unknown, score))
    print(
        f"{args.settings}; types {args.types} x seeds {args.seeds}: mean / worst split / per split"
    )
    for name, values in sorted(table.items(), key=lambda kv: -np.mean(kv[1])):
        cells = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:34s} {np.mean(values):.3f} {np.min(values):.3f}  {cells}")


if __name__ == "__main__":
    main()
