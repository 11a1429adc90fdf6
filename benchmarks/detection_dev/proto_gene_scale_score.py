"""Prototype (issue 16, dev set): does the per-gene scale of ``proto_gene_scale.py`` carry to
the package's default score and calls? Per two-batch dev scenario of ``eval_detection.py``
and seed, one fit; the target is evaluated as given and after dividing out each batch's
per-gene scale (eps 0.1, trim 0.3, 3 rounds), both with ``batch_key``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/detection_dev/proto_gene_scale_score.py OUT.csv SEED [SEED ...]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

torch.set_num_threads(1)
sys.path.insert(0, "benchmarks")
from eval_detection import SPLITS
from proto_gene_scale import gene_scale

from acsleuth import ACsleuth, metrics
from acsleuth._constants import N_NEIGHBOURS
from acsleuth.data import prepare

POSITIONS = (10, 11, 12, 14, 15, 16, 17, 18)  # every two-batch dev scenario


def f1_at_ratio(truth: np.ndarray, score: np.ndarray) -> float:
    """F1 of calling the ``truth.sum()`` top-scored cells."""
    return metrics.f1(truth, score >= np.sort(score)[-int(truth.sum())])


def rescaled(model: ACsleuth, reference: AnnData, target: AnnData) -> AnnData:
    """``target`` (log-normalised, the model's genes) with each batch's per-gene scale divided out."""
    x_ref = torch.as_tensor(prepare(reference, genes=model.genes_).rows(np.arange(reference.n_obs)))
    x = torch.as_tensor(prepare(target, genes=model.genes_).rows(np.arange(target.n_obs)))
    x_ref, x = x_ref.float(), x.float()
    mean = x_ref.mean(0)
    components = torch.linalg.svd(x_ref - mean, full_matrices=False)[2][:50].T
    level = torch.expm1(x_ref).mean()
    codes = target.obs["batch"].cat.codes.to_numpy()
    out = x.clone()
    for batch in np.unique(codes):
        rows = torch.from_numpy(codes == batch)
        s = gene_scale(
            x[rows], x_ref, mean, components, N_NEIGHBOURS, 3, 0.3, 0.1 * level * rows.sum()
        )
        out[rows] = torch.log1p(torch.expm1(x[rows]) * torch.exp(-s))
    corrected = AnnData(out.numpy(), obs=target.obs.copy())
    corrected.var_names = list(model.genes_)
    return corrected


def rows_of(position: int, seed: int) -> list[dict]:
    scenario = SPLITS["dev"][position]
    reference, target = scenario.load(seed)
    truth = target.obs["is_anomaly"].to_numpy().astype(bool)
    model = ACsleuth(random_state=seed, verbose=False, device="cpu", n_jobs=1).fit(reference)
    out = []
    for name, data in (("package", target), ("gene scale", rescaled(model, reference, target))):
        result = model.evaluate(data, batch_key="batch")
        out.append(
            {
                "i": position,
                "scenario": scenario.label,
                "sd": scenario.batch_effect,
                "seed": seed,
                "method": name,
                "auroc": metrics.auroc(truth, result.score),
                "f1_at_ratio": f1_at_ratio(truth, result.score),
                "f1_calls": metrics.f1(truth, result.anomaly),
                "called/true": result.anomaly.sum() / truth.sum(),
            }
        )
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    table = [row for seed in map(int, sys.argv[2:]) for p in POSITIONS for row in rows_of(p, seed)]
    pd.DataFrame(table).to_csv(sys.argv[1], index=False)
