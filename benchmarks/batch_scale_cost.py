"""What the per-gene batch scale costs a large target: ``evaluate(target, batch_key=...)``
with ``batch_scale`` on and off on the same fitted model, one torch thread.

Synthetic data (``datasets.synthetic``), log-normalised, 2,000 genes, per-gene batch effects
of sd 1; module I, the MMD predictor and its warm start at 1 epoch each (their cost does not
depend on the setting). Prints the seconds of ``evaluate``, of the scale's estimate
(``timings["batch scale"]``) and the AUROC, for each setting.

    OMP_NUM_THREADS=1 python benchmarks/batch_scale_cost.py --reference 20000 --target 100000 --batches 10
"""

from __future__ import annotations

import argparse
import time

import scanpy as sc
import torch

from acsleuth import ACsleuth, datasets, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=20000)
    parser.add_argument("--target", type=int, default=100000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--genes", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference, target = datasets.synthetic(
        args.reference, args.target, args.genes, n_batches=args.batches, batch_effect=1.0, seed=0
    )
    for adata in (reference, target):
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    epochs = {"prepare_epochs": 1, "train_epochs": 1, "score_epochs": 1, "warm_epochs": 1}
    model = ACsleuth(**epochs, device="cpu", random_state=0, verbose=False).fit(reference)
    truth = target.obs["is_anomaly"].to_numpy(bool)
    for on in (True, False):
        model.params["batch_scale"] = on
        start = time.perf_counter()
        result = model.evaluate(target, batch_key="batch")
        seconds = time.perf_counter() - start
        print(
            f"{args.target} target cells in {args.batches} batches, batch_scale={on}: "
            f"evaluate {seconds:.1f} s, of which the scale's estimate "
            f"{result.timings.get('batch scale', 0.0):.2f} s; "
            f"AUROC {metrics.auroc(truth, result.score):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
