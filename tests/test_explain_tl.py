"""acsleuth.tl.explain_groups / explain_subtypes write what scanpy reads (docs/method.md §8.3)."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from anndata import AnnData

import acsleuth
from acsleuth.stages.explain import ExplainConfig

matplotlib.use("Agg")
FAST = ExplainConfig(max_iter=60, max_cells=30, n_components=5)


@pytest.fixture(scope="module")
def toy() -> AnnData:
    adata = acsleuth.datasets.causal_panels(90, 3, n_dependent=10, n_noise=10, seed=1)
    adata.obs["group"] = adata.obs["group"].map({"0": "a", "1": "b", "2": "c"}).astype("category")
    return adata


def test_scanpy_reads_the_panels(toy: AnnData) -> None:
    before = toy.copy()
    out = acsleuth.tl.explain_groups(toy, groupby="group", config=FAST, n_genes=12, copy=True)
    assert "acsleuth_explain" not in toy.uns and np.array_equal(toy.X, before.X)  # copy=True
    uns = out.uns["acsleuth_explain"]
    assert uns["params"]["method"] == "ace" and uns["params"]["groupby"] == "group"
    df = sc.get.rank_genes_groups_df(out, "a", key="acsleuth_explain")
    assert len(df) == 12 and list(df["names"]) == list(uns["names"]["a"])
    assert np.all(np.diff(df["scores"].to_numpy()) <= 0)  # best first
    assert set(uns["flipped"]) == {"a", "b", "c"} and all(
        0 <= v <= 1 for v in uns["flipped"].values()
    )
    assert set(np.unique(uns["direction"]["b"])) <= {-1, 1}
    dotplot = sc.pl.rank_genes_groups_dotplot(out, key="acsleuth_explain", n_genes=3, show=False)
    assert dotplot is not None


def test_signal_genes_lead_and_direction_matches_the_means(toy: AnnData) -> None:
    out = acsleuth.tl.explain_groups(toy, groupby="group", config=FAST, n_genes=5, copy=True)
    uns = out.uns["acsleuth_explain"]
    roles = toy.var["role"]
    for group in ("a", "b", "c"):
        top = list(uns["names"][group][:3])
        assert (roles[top] != "noise").all()
        inside = (toy.obs["group"] == group).to_numpy()
        gene = top[0]
        column = toy[:, gene].X.ravel()
        enriched = column[inside].mean() > column[~inside].mean()
        assert uns["direction"][group][0] == (1 if enriched else -1)


def test_embeddings_obsm_key_and_callable_and_determinism(toy: AnnData) -> None:
    adata = toy.copy()
    sc.pp.pca(adata, n_comps=5)
    acsleuth.tl.explain_groups(adata, groupby="group", embedding="X_pca", config=FAST)
    first = adata.uns["acsleuth_explain"]
    assert first["params"]["embedding"] == "X_pca" and first["params"]["embedding_r2"] > 0.999
    acsleuth.tl.explain_groups(
        adata, groupby="group", embedding="X_pca", config=FAST, key_added="again"
    )
    np.testing.assert_array_equal(first["scores"]["a"], adata.uns["again_explain"]["scores"]["a"])

    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    acsleuth.tl.explain_groups(
        adata, groupby="group", embedding=identity, config=FAST, key_added="id"
    )
    assert adata.uns["id_explain"]["params"]["embedding"] == "identity"


def test_default_embedding_is_whitened_and_pca_stays_available(toy: AnnData) -> None:
    adata = toy.copy()
    acsleuth.tl.explain_groups(adata, groupby="group", config=FAST)
    acsleuth.tl.explain_groups(adata, groupby="group", embedding="pca", config=FAST, key_added="p")
    whitened, pca = adata.uns["acsleuth_explain"], adata.uns["p_explain"]
    assert (
        whitened["params"]["embedding"] == "whitened" and whitened["params"]["whiten_floor"] == 0.9
    )
    assert pca["params"]["embedding"] == "pca" and pca["params"]["n_components"] == 5
    assert list(whitened["names"]["a"]) != list(pca["names"]["a"])  # a different geometry
    with pytest.raises(ValueError, match="whiten_floor must be in"):
        acsleuth.tl.explain_groups(adata, groupby="group", config=ExplainConfig(whiten_floor=-0.1))


def test_one_vs_one_and_bad_inputs_say_what_to_fix(toy: AnnData) -> None:
    out = acsleuth.tl.explain_groups(
        toy, groupby="group", mode="one_vs_one", reference="c", config=FAST, copy=True
    )
    assert set(out.uns["acsleuth_explain"]["names"].dtype.names) == {"a", "b"}
    with pytest.raises(KeyError, match="obs\\['nope'\\]"):
        acsleuth.tl.explain_groups(toy, groupby="nope")
    with pytest.raises(KeyError, match="neither 'whitened', 'pca' nor an obsm key"):
        acsleuth.tl.explain_groups(toy, groupby="group", embedding="X_missing")
    with pytest.raises(ValueError, match="reference"):
        acsleuth.tl.explain_groups(toy, groupby="group", mode="one_vs_one")
    single = toy.copy()
    single.obs["one"] = pd.Categorical(["x"] * single.n_obs)
    with pytest.raises(ValueError, match="at least 2"):
        acsleuth.tl.explain_groups(single, groupby="one")


def test_panel_plot_draws_signed_bars(toy: AnnData) -> None:
    out = acsleuth.tl.explain_groups(toy, groupby="group", config=FAST, copy=True)
    fig = acsleuth.pl.explain_panels(out, n_genes=4, return_fig=True)
    assert len(fig.axes) == 3
    bars = fig.axes[0].patches
    direction = out.uns["acsleuth_explain"]["direction"]["a"][:4][::-1]
    assert len(bars) == 4 and all(
        np.sign(b.get_width()) in (d, 0) for b, d in zip(bars, direction, strict=True)
    )
    with pytest.raises(KeyError, match="explain_groups"):
        acsleuth.pl.explain_panels(toy)


def test_explain_subtypes_uses_desc_centroids_and_lands_in_the_report() -> None:
    from _helpers import FastACsleuth

    from acsleuth.report import _subtype_panels

    reference, target = acsleuth.datasets.pbmc_holdout(["CD19+ B", "CD56+ NK"], seed=0)
    model = FastACsleuth(random_state=0)
    with pytest.raises(KeyError, match="subtype_anomalies"):
        acsleuth.tl.explain_subtypes(target, model)
    model.run(reference, target, n_subtypes=2, correct=False)
    with warnings.catch_warnings():  # e.g. anndata's "Transforming to str index" reached users
        warnings.simplefilter("error")
        acsleuth.tl.explain_subtypes(target, model, config=FAST, n_genes=6)
    uns = target.uns["acsleuth_explain"]
    assert uns["params"]["head"] == "student_t" and uns["params"]["embedding_r2"] > 0.999
    assert uns["params"]["groupby"] == "acsleuth_subtype"
    assert set(uns["names"].dtype.names) == {"0", "1"} and min(uns["flipped"].values()) > 0.5
    text = "\n".join(_subtype_panels(target, "acsleuth"))  # the section report.md gains
    assert "## Subtype panels (ACE)" in text and f"| 0 | {uns['flipped']['0']:.0%} |" in text
    # the model's encoder as the embedding of any grouping
    cells = target[:, list(model.genes_)].copy()
    acsleuth.tl.explain_groups(
        cells, groupby="cell_type", embedding=model, config=FAST, use_raw=False
    )
    assert cells.uns["acsleuth_explain"]["params"]["embedding"] == "acsleuth_encoder"
    assert np.mean(list(cells.uns["acsleuth_explain"]["flipped"].values())) > 0.5
    with pytest.raises(ValueError, match="model's genes in order"):
        acsleuth.tl.explain_groups(
            target[:, ::-1].copy(), groupby="cell_type", embedding=model, use_raw=False
        )
