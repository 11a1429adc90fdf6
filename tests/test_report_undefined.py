"""report.md: undefined metrics are "n/a" (not 0), metrics are defined, parameters are listed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from anndata import AnnData

from acsleuth.report import write_report


def test_nmi_with_one_true_anomalous_type_is_na_and_parameters_are_listed(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 40
    truth = np.arange(n) < 10  # one anomalous type, "B"
    adata = AnnData(
        obs=pd.DataFrame(
            {"cell_type": np.where(truth, "B", "T")}, index=[f"c{i}" for i in range(n)]
        )
    )
    adata.obs["truth"] = truth
    adata.obs["acsleuth_score"] = truth + rng.normal(scale=0.1, size=n)
    adata.obs["acsleuth_anomaly"] = truth
    adata.obs["acsleuth_subtype"] = pd.Categorical.from_codes(
        np.where(truth, np.arange(n) % 2, -1), ["0", "1"]
    )
    adata.obsm["X_acsleuth"] = rng.normal(size=(n, 8)).astype(np.float32)
    adata.uns["acsleuth"] = {
        "threshold": 0.5,
        "n_subtypes": 2,
        "version": "0.1.0",
        "params": {"batch_key": "batch", "command": "acsleuth run --out a|b"},
    }
    text = write_report(adata, tmp_path, label_key="cell_type", truth_key="truth").read_text()
    assert "| nmi | n/a |" in text and "| ari | n/a |" in text and "| f1_nmi | n/a |" in text
    assert "| auroc | 1 |" in text and "NMI and ARI: agreement" in text
    assert "| batch_key | `batch` |" in text and "`acsleuth run --out a/b`" in text
    assert "| version | 0.1.0 |" in text
