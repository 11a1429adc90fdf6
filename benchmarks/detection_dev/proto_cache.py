"""Prototype (issue 16, dev set): per scenario, fit once and cache every per-cell array needed to
try scores offline (into /tmp/mt; run by benchmarks/detection_dev/proto_runall.sh DEV)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
from acsleuth import ACsleuth, datasets
from acsleuth.data import prepare


def load(sc, seed):
    if sc["kind"] == "synthetic":
        return datasets.synthetic(
            600,
            800,
            1000,
            n_types=6,
            n_anomaly_types=sc["n_anom"],
            anomaly_ratio=sc["ratio"],
            n_batches=sc["batches"],
            batch_effect=sc["sd"],
            seed=seed,
        )
    return datasets.pbmc_holdout(
        list(sc["held"]),
        anomaly_ratio=sc["ratio"],
        n_batches=sc["batches"],
        batch_effect=sc["sd"],
        seed=seed,
    )


def run(sc, seed, epochs, out):
    ref, tgt = load(sc, seed)
    t0 = time.time()
    m = ACsleuth(
        prepare_epochs=epochs[0],
        train_epochs=epochs[1],
        random_state=seed,
        verbose=False,
        device="cpu",
    )
    m.fit(ref)
    fit_s = time.time() - t0
    res = m.evaluate(tgt)
    resb = m.evaluate(tgt, batch_key="batch", score="scaled") if sc["batches"] > 1 else res
    rs = prepare(ref, genes=m.genes_, name="reference")
    ts = prepare(tgt, genes=m.genes_, name="target")
    xr = rs.rows(np.arange(rs.n_obs))
    xt = ts.rows(np.arange(ts.n_obs))
    zr = m.embed(rs).numpy()
    zt = res.embedding
    # reference scores for calibration
    rres = m.evaluate(ref, score="scaled")
    np.savez_compressed(
        out,
        truth=tgt.obs["is_anomaly"].to_numpy(),
        batch=tgt.obs["batch"].cat.codes.to_numpy(),
        ctype=tgt.obs["cell_type"].astype(str).to_numpy(),
        xr=xr.astype(np.float32),
        xt=xt.astype(np.float32),
        zr=zr,
        zt=zt,
        mmd=res.scores["mmd"],
        scaled=res.scores["scaled"],
        scaled_b=resb.scores["scaled"],
        cosine=res.scores["cosine"],
        ref_scaled=rres.scores["scaled"],
        fit_s=fit_s,
    )


if __name__ == "__main__":
    sc = json.loads(sys.argv[1])
    seed = int(sys.argv[2])
    ep = tuple(map(int, sys.argv[3].split(",")))
    t = time.time()
    run(sc, seed, ep, sys.argv[4])
    print(sys.argv[4], f"{time.time() - t:.1f}s", flush=True)
