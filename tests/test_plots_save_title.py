"""``acsleuth.pl``: ``title=`` and ``save=`` as in scanpy, and a missing column named with the columns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from acsleuth import pl


@pytest.fixture
def annotated() -> AnnData:
    rng = np.random.default_rng(0)
    n = 60
    score = rng.normal(size=n)
    adata = AnnData(
        obs=pd.DataFrame(
            {"cell_type": rng.choice(["a", "b"], n)}, index=[f"c{i}" for i in range(n)]
        )
    )
    adata.obs["acsleuth_score"] = score
    adata.obs["acsleuth_anomaly"] = score > 1.0
    codes = np.where(score > 1.0, (score > 1.5).astype(int), -1)
    adata.obs["acsleuth_subtype"] = pd.Categorical.from_codes(codes, categories=["0", "1"])
    adata.uns["acsleuth"] = {"threshold": 1.0}
    return adata


def test_save_writes_the_figure_and_title_names_it(annotated, tmp_path) -> None:
    fig = pl.scores(
        annotated,
        groupby="cell_type",
        title="scores by type",
        save=tmp_path / "s.png",
        return_fig=True,
    )
    assert fig.axes[0].get_title() == "scores by type"
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = pl.subtypes(annotated, title="sizes", save=tmp_path / "t.pdf")
    assert ax.get_title() == "sizes" and (tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF"


def test_a_missing_groupby_is_a_key_error_listing_the_columns(annotated) -> None:
    with pytest.raises(
        KeyError, match=r"groupby 'celltype' is not an obs column \(columns: \['cell_type'"
    ):
        pl.scores(annotated, groupby="celltype", show=False)
    with pytest.raises(
        KeyError, match=r"label_key 'labels' is not an obs column \(columns: \['cell_type'"
    ):
        pl.subtypes(annotated, kind="confusion", label_key="labels", show=False)
