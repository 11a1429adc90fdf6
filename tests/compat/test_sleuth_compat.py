"""acsleuth.compat.sleuth: the reference library's API on acsleuth's engine (docs/method.md §7, issue 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

import acsleuth.compat.sleuth as sleuth
from acsleuth.compat.sleuth import (
    AdaptModel,
    AnomalyModel,
    SubtypeModel,
    evaluate,
    load_pkl,
    read,
    save_pkl,
    update_configs_with_args,
)
from acsleuth.compat.sleuth.configs import AdaptConfigs, AnomalyConfigs, SubtypeConfigs
from acsleuth.nn import Generator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pbmc_task() -> tuple[ad.AnnData, ad.AnnData, np.ndarray]:
    """PBMC with "CD19+ B" held out of a 300-cell reference; the target has two batches."""
    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    rng = np.random.default_rng(0)
    is_b = (adata.obs["bulk_labels"] == "CD19+ B").to_numpy()
    normal = rng.permutation(np.flatnonzero(~is_b))
    ref = adata[np.sort(normal[:300])].copy()
    tgt = adata[np.sort(np.r_[normal[300:], np.flatnonzero(is_b)])].copy()
    tgt.obs["batch"] = pd.Categorical(np.where(rng.random(tgt.n_obs) < 0.5, "a", "b"))
    label = (tgt.obs["bulk_labels"] == "CD19+ B").to_numpy().astype(int)
    return ref, tgt, label


def quick(configs: AnomalyConfigs) -> AnomalyConfigs:
    configs.prepare_epochs, configs.train_epochs, configs.score_epochs = 6, 3, 5
    return configs


@pytest.fixture(scope="module")
def trained(pbmc_task) -> AnomalyModel:
    ref, _, _ = pbmc_task
    model = AnomalyModel(quick(AnomalyConfigs(ref.n_vars)))
    model.detect(ref)
    return model


# --------------------------------------------------------------------------- defaults (docs/method.md §7)
def test_anomaly_defaults_are_the_reference_libraries():
    c = AnomalyConfigs(2000)
    assert (c.gene_dim, c.prepare_epochs, c.train_epochs, c.score_epochs) == (2000, 50, 20, 20)
    assert (c.batch_size, c.learning_rate, c.n_critic, c.random_state) == (128, 1e-4, 2, 2024)
    assert c.loss_weight == {"w_rec": 30, "w_adv": 1, "w_gp": 10}
    assert c.Discriminator == {"in_dim": 2000, "hidden_dim": [256, 16], "num_blocks": 1}
    assert c.Generator == {
        "in_dim": 2000,
        "hidden_dim": [512, 256],
        "num_blocks": 2,
        "mem_dim": 512,
        "threshold": 0.01,
        "temperature": 0.05,
    }
    assert c.Scorer == {"in_dim": 2000, "hidden_dim": [512, 256]}
    assert c.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_adapt_and_subtype_defaults_are_the_reference_libraries():
    a = AdaptConfigs(10)
    assert (a.n_epochs, a.batch_size, a.learning_rate, a.n_critic, a.random_state) == (
        50,
        128,
        1e-4,
        3,
        2024,
    )
    assert a.loss_weight == {"w_rec": 30, "w_adv": 1, "w_gp": 10}
    s = SubtypeConfigs(10)
    assert (s.n_epochs, s.batch_size, s.learning_rate, s.weight_decay, s.random_state) == (
        100,
        64,
        1e-4,
        1e-4,
        2024,
    )
    assert s.Cluster == {
        "alpha": 1,
        "KMeans_n_init": 20,
        "num_layers": 3,
        "nheads": 4,
        "hidden_dim": 512,
        "dropout": 0.1,
    }


def test_default_configs_give_the_engine_the_spec_settings():
    params = AnomalyModel(AnomalyConfigs(50)).engine.params
    expected = dict(
        prepare_epochs=50,
        train_epochs=20,
        score_epochs=20,
        batch_size=128,
        learning_rate=1e-4,
        n_critic=2,
        reconstruction_weight=30.0,
        adversarial_weight=1.0,
        gp_weight=10.0,
        random_state=2024,
        n_memory=512,
        memory_shrink=0.01,
        memory_temperature=0.05,
        n_top_genes=50,
    )
    assert {k: params[k] for k in expected} == expected
    style = AdaptModel(AdaptConfigs(50), 1)._settings
    assert (style["style_epochs"], style["style_n_critic"], style["batch_size"]) == (50, 3, 128)
    subtype = SubtypeModel(SubtypeConfigs(50), Generator(50), 3)
    c = subtype.config
    assert (c.embedding, c.epochs, c.batch_size, c.lr, c.weight_decay, c.dof, c.n_init) == (
        "fusion",
        100,
        64,
        1e-4,
        1e-4,
        1.0,
        20,
    )
    assert (c.n_layers, c.n_heads, c.feedforward, c.dropout) == (3, 4, 512, 0.1)


def test_configs_are_plain_mutable_objects_read_when_the_model_is_built():
    c = AnomalyConfigs(40)
    c.train_epochs = 7
    c.loss_weight["w_gp"] = 5
    c.Generator["temperature"] = 0.1
    update_configs_with_args(c, {"batch_size": 32, "learning_rate": None, "not_a_setting": 1})
    assert not hasattr(c, "not_a_setting") and c.learning_rate == 1e-4
    params = AnomalyModel(c).engine.params
    assert (
        params["train_epochs"],
        params["gp_weight"],
        params["memory_temperature"],
        params["batch_size"],
    ) == (7, 5.0, 0.1, 32)
    c.train_epochs = 9  # after the model was built: no effect on it, as in the reference
    assert params["train_epochs"] == 7
    assert c.to_dict()["Generator"]["temperature"] == 0.1 and isinstance(c.to_dict()["device"], str)


def test_networks_acsleuth_does_not_build_are_refused_with_the_fix(pbmc_task):
    ref, _, _ = pbmc_task
    c = quick(AnomalyConfigs(ref.n_vars))
    c.Generator["hidden_dim"] = [1024, 256]
    with pytest.raises(ValueError, match=r"Generator\['hidden_dim'\].*remove that assignment"):
        AnomalyModel(c).detect(ref)
    with pytest.raises(
        ValueError, match=r"in_dim'\] is 10 but the data have 765 genes.*gene_dim=765"
    ):
        AnomalyModel(quick(AnomalyConfigs(10))).detect(ref)


# --------------------------------------------------------------------------- the script and quality
def test_a_reference_style_script_runs_with_only_its_imports_changed(pbmc_task, tmp_path):
    ref, tgt, label = pbmc_task
    data = tmp_path / "pbmc.pkl"
    save_pkl(str(data), ref, tgt, label)
    result = tmp_path / "result.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/compat/reference_style_script.py"),
            "--data_path",
            str(data),
            "--result_path",
            str(result),
            "--gene_dim",
            str(ref.n_vars),
            "--prepare_epochs",
            "6",
            "--train_epochs",
            "3",
            "--score_epochs",
            "5",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    row = pd.read_csv(result).iloc[0]
    assert (row["prepare_epochs"], row["train_epochs"], row["score_epochs"]) == (6, 3, 5)
    assert (row["mem_rows"], row["w_rec_used"]) == (300, 40.0)  # dict entries edited by the script
    assert row["roc_auc"] > 0.95 and row["f1"] > 0.8  # held-out B cells, 9 GAN epochs


def test_predict_gives_probabilities_that_rank_like_the_engines_scores(trained, pbmc_task):
    _, tgt, label = pbmc_task
    p = trained.predict(tgt)
    assert p.shape == (tgt.n_obs,) and p.dtype == np.float64
    assert ((p > 0) & (p < 1)).all()
    auroc, ap, f1 = evaluate(label, p)
    assert auroc > 0.95 and ap > 0.8 and f1 > 0.8
    logits = trained.engine.evaluate(tgt).scores["mmd"]
    np.testing.assert_array_equal(np.argsort(p, kind="stable"), np.argsort(logits, kind="stable"))


def test_g_score_and_d_score_are_the_residual_and_critic_distances(trained, pbmc_task):
    _, tgt, _ = pbmc_task
    x = torch.as_tensor(
        tgt.X.toarray(), dtype=torch.float32
    )  # PBMC's X is CSR; the models take it as is
    with torch.no_grad():
        x_hat, _ = trained.G.eval()(x)
        critic = trained.D.eval()
        np.testing.assert_allclose(
            trained.G_score(tgt), (x - x_hat).norm(dim=1).numpy(), rtol=1e-4, atol=1e-4
        )
        expected = (critic(x) - critic(x_hat)).norm(dim=1).numpy()
    np.testing.assert_allclose(trained.D_score(tgt), expected, rtol=1e-4, atol=1e-4)


def test_scoring_before_detect_is_a_clear_error(pbmc_task):
    with pytest.raises(RuntimeError, match="call detect"):
        AnomalyModel(AnomalyConfigs(765)).predict(pbmc_task[1])


# --------------------------------------------------------------------------- the reference's crashes
def test_fewer_reference_cells_than_a_batch_still_train(pbmc_task):
    ref, tgt, _label = pbmc_task
    model = AnomalyModel(quick(AnomalyConfigs(ref.n_vars)))  # batch 128 > 60 cells
    model.detect(ref[:60].copy())
    assert model.engine.history_["prepare"]  # epochs ran
    assert np.isfinite(model.predict(tgt)).all()


def test_a_batch_size_that_does_not_divide_the_memory_size_trains(pbmc_task):
    ref, tgt, _ = pbmc_task
    c = quick(AnomalyConfigs(ref.n_vars))
    c.batch_size = 100  # 512 % 100 != 0: the reference asserts
    model = AnomalyModel(c)
    model.detect(ref)
    assert int(model.G.memory.position) == (3 * (300 // 100) * 100) % 512
    assert np.isfinite(model.predict(tgt)).all()


def test_adaptation_with_several_target_batches(trained, pbmc_task):
    ref, tgt, _ = pbmc_task
    tgt = tgt.copy()
    tgt.X = tgt.X.toarray()
    tgt.obs["batch"] = pd.Categorical(np.arange(tgt.n_obs) % 3)
    tgt.X[tgt.obs["batch"].to_numpy() == 2] *= 1.5  # a batch effect on one batch
    before = tgt.X.copy()
    c = AdaptConfigs(ref.n_vars)
    c.n_epochs = 2
    corrected = AdaptModel(c, 3).adapt(ref, tgt, "batch", trained.G)
    np.testing.assert_array_equal(tgt.X, before)  # the input is left alone
    assert corrected.shape == tgt.shape and np.isfinite(corrected.X).all()
    assert list(corrected.var_names) == list(ref.var_names) and list(corrected.obs_names) == list(
        tgt.obs_names
    )
    with pytest.raises(ValueError, match="num_batches=3"):
        AdaptModel(c, 2).adapt(ref, tgt, "batch", trained.G)


def test_subtyping_survives_clusters_missing_from_minibatches(trained, pbmc_task):
    _, tgt, label = pbmc_task
    anomalies = tgt[label == 1].copy()
    c = SubtypeConfigs(tgt.n_vars)
    c.n_epochs, c.batch_size = 3, 8  # 6 clusters, minibatches of 8: most miss some cluster
    model = SubtypeModel(c, trained.G, 6)
    q = model.fit(anomalies)
    assert isinstance(q, torch.Tensor) and q.shape == (anomalies.n_obs, 6)
    torch.testing.assert_close(q.sum(1), torch.ones(anomalies.n_obs, dtype=q.dtype))
    np.testing.assert_array_equal(model.labels_.shape, (anomalies.n_obs,))
    with pytest.raises(ValueError, match="n_subtypes must be"):
        SubtypeModel(c, trained.G, anomalies.n_obs + 1).fit(anomalies)


# --------------------------------------------------------------------------- pickles and reading
def test_pickle_round_trip_keeps_the_reference_layout(pbmc_task, tmp_path):
    ref, tgt, label = pbmc_task
    path = tmp_path / "data.pkl"
    save_pkl(path, ref, tgt, label)
    r, t, lab = load_pkl(path)
    np.testing.assert_array_equal(r.X.toarray(), ref.X.toarray())
    np.testing.assert_array_equal(t.X.toarray(), tgt.X.toarray())
    pd.testing.assert_frame_equal(t.obs, tgt.obs)
    np.testing.assert_array_equal(lab, label)
    import pickle

    with open(path, "rb") as handle:
        assert set(pickle.load(handle)) == {"reference", "target", "label"}
    save_pkl(r[:5].copy(), t[:5].copy(), path)  # path last, no label: replaces the file whole
    r5, t5, none = load_pkl(path)
    assert (r5.n_obs, t5.n_obs, none) == (5, 5, None)
    assert [p.name for p in tmp_path.iterdir()] == ["data.pkl"]  # no temporary left behind


def test_bad_pickles_and_calls_are_clear_errors(tmp_path):
    path = tmp_path / "list.pkl"
    import pickle

    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a dict with keys"):
        load_pkl(path)
    with pytest.raises(TypeError, match=r"save_pkl\(path, ref, tgt, label\)"):
        save_pkl(ad.AnnData(np.ones((2, 2))), ad.AnnData(np.ones((2, 2))))
    with pytest.raises(TypeError, match="reference must be an AnnData"):
        save_pkl(tmp_path / "x.pkl", np.ones(2), ad.AnnData(np.ones((2, 2))), None)


def test_read_filters_normalises_and_aligns_the_target(tmp_path):
    rng = np.random.default_rng(0)
    genes = ["MT-CO1", "ERCC-1", "RARE", *[f"G{i}" for i in range(20)]]
    counts = rng.poisson(3.0, (30, len(genes))).astype(np.float32)
    counts[:, 2] = 0
    counts[0, 2] = 5  # expressed in one cell only: filtered
    ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=genes)).write_h5ad(
        tmp_path / "ref.h5ad"
    )
    tgt_genes = [f"G{i}" for i in range(19, -1, -1) if i != 3]  # reversed, lacks G3
    ad.AnnData(
        rng.poisson(3.0, (10, 19)).astype(np.float32), var=pd.DataFrame(index=tgt_genes)
    ).write_h5ad(tmp_path / "tgt.h5ad")
    with pytest.warns(UserWarning, match="lacks 1 of the 20 reference genes"):
        ref, tgt = read(str(tmp_path), "ref", tgt_name="tgt.h5ad")
    assert list(ref.var_names) == [f"G{i}" for i in range(20)]
    assert list(tgt.var_names) == list(ref.var_names)
    totals = np.expm1(np.asarray(ref.X.todense())).sum(1)
    np.testing.assert_allclose(totals, np.median(counts[:, 3:].sum(1)), rtol=1e-4)
    assert (np.asarray(tgt.X)[:, 3] == 0).all()
    raw, _ = read(str(tmp_path), "ref", preprocess=False)
    assert raw.n_vars == len(genes)


# --------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize(
    ("y_true", "y_score", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], (1.0, 1.0, 1.0)),
        # 50th percentile of the scores is 0.5: cells 0 and 1 are called, one of them rightly
        ([1, 0, 0, 1], [0.9, 0.8, 0.1, 0.2], (0.75, 0.5 + 0.5 * 2 / 3, 0.5)),
        # 75th percentile, interpolated: 0.4 + 0.25 * (0.8 - 0.4) = 0.5, so only 0.8 is called
        ([0, 0, 0, 1], [0.1, 0.4, 0.35, 0.8], (1.0, 1.0, 1.0)),
        # all scores tie: every cell is called (score >= threshold)
        ([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3], (0.5, 0.5, 2 * 0.5 / 1.5)),
    ],
)
def test_evaluate_matches_its_definition_on_hand_made_cases(y_true, y_score, expected):
    np.testing.assert_allclose(evaluate(y_true, y_score), expected)
    np.testing.assert_allclose(
        evaluate(pd.Series(y_true).astype(bool), pd.Series(y_score)), expected
    )


def test_evaluate_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="needs both classes"):
        evaluate([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        evaluate([0, 1], [0.1, 0.2, 0.3])


def test_the_package_mirrors_the_reference_modules():
    assert sleuth.configs.AnomalyConfigs is AnomalyConfigs
    assert sleuth._utils.evaluate is evaluate and callable(sleuth._utils.select_device)
    assert set(sleuth.__all__) >= {
        "read",
        "save_pkl",
        "load_pkl",
        "AnomalyModel",
        "AdaptModel",
        "SubtypeModel",
    }
