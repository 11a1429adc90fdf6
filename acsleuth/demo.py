"""``acsleuth demo``: the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches.

Held-out cell types are the anomalies; the target is split over two batches, the second
given a synthetic per-gene batch effect (:func:`acsleuth.datasets.pbmc_holdout`). One model
is fitted on the reference and run twice on the target, told the number of held-out types
but not how many cells are anomalous: ignoring the batches, and with the batch key
(per-batch score centring, kin matching and style transfer). Both are scored against the
truth (F1 of the calls, NMI and ARI of the subtypes, F1 x NMI) beside the peer of
:mod:`acsleuth.baselines`, run on the same cells and told the true anomaly ratio too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from . import __version__, datasets, metrics, ops
from ._anndata.detect import keys
from ._atomic import atomic_dir
from ._constants import EPOCH_PARAMS, KEY_ADDED, SEED
from .baselines import peer_pipeline
from .data import prepare
from .model import ACsleuth

MARKER = ".acsleuth_demo"
HELD_OUT = ("CD19+ B", "Dendritic")
ANOMALY_RATIO = 0.3
BATCH_EFFECT = 1.0
BATCH_KEY = "batch"
PEER = "peer: kNN in reference PCs + k-means, told the ratio"


def check_folder(out: Path) -> None:
    """Refuse an existing ``out`` that an earlier demo did not write (it may hold user data)."""
    if out.exists() and not (out / MARKER).exists():
        raise FileExistsError(
            f"acsleuth demo: {out} exists and was not written by the demo; "
            "choose another folder with --out"
        )


def evaluate_run(target: AnnData, key: str = KEY_ADDED) -> dict[str, float]:
    """F1 of the calls, NMI/ARI of the subtypes on the true anomalies called, F1 x NMI."""
    k = keys(key)
    return evaluate_calls(
        target,
        target.obs[k.score].to_numpy(),
        target.obs[k.anomaly].to_numpy(bool),
        target.obs[k.subtype].astype(object).to_numpy(),
    )


def evaluate_calls(
    target: AnnData, score: np.ndarray, called: np.ndarray, subtype: np.ndarray
) -> dict[str, float]:
    """The demo's metrics of one method's ``score``, ``called`` cells and their ``subtype``
    (one entry per target cell, None where not called) against ``target``'s truth."""
    truth = target.obs["is_anomaly"].to_numpy(bool)
    scores = metrics.subtype_scores(truth, called, target.obs["cell_type"].astype(str), subtype)
    return {
        "AUROC": metrics.auroc(truth, score),
        "called": int(called.sum()),
        "F1": scores["f1"],
        "subtypes": len({s for s in subtype[called] if s is not None}),
        "NMI": scores["nmi"],
        "ARI": scores["ari"],
        "F1 x NMI": scores["f1_nmi"],
    }


def peer_run(reference: AnnData, target: AnnData, genes: list[str], seed: int) -> dict:
    """The metrics of the peer of :mod:`acsleuth.baselines` on the log-normalised expression
    of the model's ``genes``, told the true number of anomalies and of anomalous types."""
    truth = target.obs["is_anomaly"].to_numpy(bool)
    n_types = target.obs["cell_type"][truth].nunique()
    reference_x, x = (
        prepare(data, genes=genes, name=name).rows(np.arange(data.n_obs))
        for data, name in ((reference, "reference"), (target, "target"))
    )
    score, called, labels = peer_pipeline(reference_x, x, int(truth.sum()), n_types, seed=seed)
    subtype = np.full(len(truth), None, dtype=object)
    subtype[called] = labels.astype(str)
    return evaluate_calls(target, score, called, subtype)


def run_demo(
    out: str | Path = "acsleuth_demo",
    *,
    held_out: Sequence[str] = HELD_OUT,
    seed: int = SEED,
    device: str = "auto",
    epochs: Mapping[str, int] | Sequence[int] | None = None,
    echo=print,
) -> pd.DataFrame:
    """Run the demo, write ``out/`` and return the table of metrics (a row per run).

    ``epochs``: :class:`ACsleuth` epoch settings by name (``{"prepare_epochs": 5}``), or five
    numbers in :data:`~acsleuth._constants.EPOCH_PARAMS` order.
    """
    import matplotlib

    matplotlib.use("Agg")
    from .report import write_report

    start = time.perf_counter()
    out = Path(out)
    check_folder(out)
    reference, target = datasets.pbmc_holdout(
        list(held_out),
        anomaly_ratio=ANOMALY_RATIO,
        n_batches=2,
        batch_effect=BATCH_EFFECT,
        seed=seed,
    )
    truth = target.obs["is_anomaly"].to_numpy(bool)
    echo(
        f"acsleuth {__version__} | ops backend {ops.backend()} | pbmc68k_reduced, held out "
        f"{', '.join(held_out)}: {reference.n_obs} reference cells, {target.n_obs} target cells "
        f"({truth.sum()} anomalous) in 2 batches, one with a per-gene batch effect "
        f"(sd {BATCH_EFFECT} on the log scale)"
    )
    params = (
        dict(epochs)
        if isinstance(epochs, Mapping)
        else dict(zip(EPOCH_PARAMS, epochs or (), strict=True))
    )
    model = ACsleuth(**params, random_state=seed, device=device, verbose=False).fit(reference)
    rows, seconds, k = {}, {}, keys()
    for name, batch_key in (
        ("without batch correction", None),
        ("with batch correction", BATCH_KEY),
    ):
        begin = time.perf_counter()
        annotated = model.run(
            reference,
            target.copy(),
            batch_key=batch_key,
            correct=batch_key is not None,
            n_subtypes=len(held_out),
        )
        seconds[name] = time.perf_counter() - begin
        rows[name] = evaluate_run(annotated)
    begin = time.perf_counter()
    rows[PEER] = peer_run(reference, target, model.genes_, seed)
    seconds[PEER] = time.perf_counter() - begin
    table = pd.DataFrame(rows).T.astype({"called": int, "subtypes": int})
    table["seconds"] = pd.Series(seconds)
    echo(table.to_string(float_format=lambda v: f"{v:.3f}"))
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / MARKER).touch()
        annotated.write_h5ad(tmp / "target.h5ad")
        pd.DataFrame(
            {
                "cell_type": annotated.obs["cell_type"],
                "batch": annotated.obs[BATCH_KEY],
                "is_anomaly": truth,
                "score": annotated.obs[k.score],
                "anomaly": annotated.obs[k.anomaly],
                "subtype": annotated.obs[k.subtype],
            }
        ).to_csv(tmp / "cells.csv", index_label="cell")
        table.to_csv(tmp / "metrics.csv", index_label="run")
        write_report(annotated, tmp, label_key="cell_type", truth_key="is_anomaly")
    echo(
        f"wrote {out}/ (target.h5ad, cells.csv, metrics.csv, report.md and figures) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return table


__all__ = ["HELD_OUT", "check_folder", "evaluate_calls", "evaluate_run", "peer_run", "run_demo"]
