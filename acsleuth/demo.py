"""``acsleuth demo``: the whole pipeline on scanpy's bundled pbmc68k_reduced, two batches.

Held-out cell types are the anomalies; the target is split over two batches, the second
given a synthetic per-gene batch effect (:func:`acsleuth.datasets.pbmc_holdout`). One model
is fitted on the reference and run twice on the target: ignoring the batches, and with the
batch key (per-batch score centring, kin matching and style transfer). Both are scored
against the truth (F1 of the calls, NMI and ARI of the subtypes, F1 x NMI).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from anndata import AnnData

from . import __version__, datasets, metrics, ops
from ._anndata.detect import keys
from ._atomic import atomic_dir
from ._constants import EPOCH_PARAMS, KEY_ADDED, SEED
from .model import ACsleuth

MARKER = ".acsleuth_demo"
HELD_OUT = ("CD19+ B", "Dendritic")
ANOMALY_RATIO = 0.3
BATCH_EFFECT = 1.0
BATCH_KEY = "batch"


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
    truth = target.obs["is_anomaly"].to_numpy(bool)
    called = target.obs[k.anomaly].to_numpy(bool)
    subtype = target.obs[k.subtype].astype(object).to_numpy()
    scores = metrics.subtype_scores(truth, called, target.obs["cell_type"].astype(str), subtype)
    return {
        "AUROC": metrics.auroc(truth, target.obs[k.score].to_numpy()),
        "called": int(called.sum()),
        "F1": scores["f1"],
        "subtypes": int(target.uns[k.uns].get("n_subtypes", 0)),
        "NMI": scores["nmi"],
        "ARI": scores["ari"],
        "F1 x NMI": scores["f1_nmi"],
    }


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
            reference, target.copy(), batch_key=batch_key, correct=batch_key is not None
        )
        seconds[name] = time.perf_counter() - begin
        rows[name] = evaluate_run(annotated)
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


__all__ = ["HELD_OUT", "check_folder", "evaluate_run", "run_demo"]
