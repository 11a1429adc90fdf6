"""CellTypeClassifier (CLAMS): types and OOD scores on toy data, determinism, persistence,
bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from classify_toy import FAST, toy

from acsleuth import CellTypeClassifier, metrics


@pytest.fixture(scope="module")
def reference():
    return toy(seed=0)


@pytest.fixture(scope="module")
def target():
    return toy(n_per_type=30, types=(0, 1, 2, 3), seed=1)


@pytest.fixture(scope="module")
def fitted(reference):
    return CellTypeClassifier(random_state=0, **FAST).fit(reference, label_key="cell_type")


def test_known_types_are_classified_and_a_far_cluster_scores_out_of_distribution(
    fitted, target
) -> None:
    result = fitted.classify(target)
    unknown = (target.obs["cell_type"] == "type 3").to_numpy()
    assert metrics.auroc(unknown, result.ood_score) > 0.95  # higher = more OOD, as documented
    truth = target.obs["cell_type"].astype(str).to_numpy()
    assert (result.labels[~unknown] == truth[~unknown]).mean() > 0.95
    assert result.proba.shape == (target.n_obs, 3) and np.allclose(
        result.proba.sum(1), 1.0, atol=1e-5
    )
    assert np.allclose(result.confidence, result.proba.max(1))
    assert np.array_equal(result.ood, result.ood_score > fitted.threshold_)
    assert result.ood[unknown].mean() > 0.9 and result.ood[~unknown].mean() < 0.2
    assert fitted.classes_ == ["type 0", "type 1", "type 2"] and fitted.divergences_ == 0


def test_training_is_deterministic_per_seed(reference, target, fitted) -> None:
    again = CellTypeClassifier(random_state=0, **FAST).fit(reference, label_key="cell_type")
    assert np.array_equal(again.score_samples(target), fitted.score_samples(target))
    other = CellTypeClassifier(random_state=1, **FAST).fit(reference, label_key="cell_type")
    assert not np.array_equal(other.score_samples(target), fitted.score_samples(target))


def test_a_saved_classifier_predicts_the_same(fitted, target, tmp_path) -> None:
    fitted.save(tmp_path / "m")
    loaded = CellTypeClassifier.load(tmp_path / "m", device="cpu")
    assert len(loaded.members_) == len(fitted.members_) == 5  # the ensemble is saved
    assert np.array_equal(loaded.predict(target), fitted.predict(target))
    assert np.array_equal(loaded.predict_proba(target), fitted.predict_proba(target))
    assert np.array_equal(loaded.score_samples(target), fitted.score_samples(target))
    assert loaded.threshold_ == fitted.threshold_ and loaded.params == fitted.params
    with pytest.raises(FileExistsError, match="exists"):
        fitted.save(tmp_path / "m")
    with pytest.raises(
        FileNotFoundError, match=r"not a saved CellTypeClassifier: config\.json is missing"
    ):
        CellTypeClassifier.load(tmp_path / "nowhere")


def test_a_classifier_saved_before_the_ensemble_loads_as_its_kept_network(
    fitted, target, tmp_path
) -> None:
    fitted.save(tmp_path / "m")
    (tmp_path / "m" / "members.pt").unlink()  # what saves of earlier versions hold
    loaded = CellTypeClassifier.load(tmp_path / "m", device="cpu")
    assert loaded.members_ == []
    assert np.array_equal(loaded.score_samples(target), fitted.score_samples(target))
    proba = loaded.predict_proba(target)
    assert np.allclose(proba.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(proba, fitted.predict_proba(target), atol=1e-3)


def test_the_input_is_not_modified(reference) -> None:
    before = reference.copy()
    CellTypeClassifier(random_state=0, **{**FAST, "epochs": 1}).fit(
        reference, label_key="cell_type"
    )
    assert np.array_equal(reference.X, before.X) and reference.obs.equals(before.obs)
    assert list(reference.uns) == list(before.uns)


def test_bad_labels_are_refused_in_one_line_before_training(reference) -> None:
    model = CellTypeClassifier(**FAST)
    with pytest.raises(KeyError, match="label_key 'celltype' is not an obs column"):
        model.fit(reference, label_key="celltype")
    lonely = reference.copy()
    lonely.obs["cell_type"] = lonely.obs["cell_type"].cat.add_categories("rare")
    lonely.obs.iloc[0, 0] = "rare"
    with pytest.raises(
        ValueError, match=r"type\(s\) \['rare'\] .* fewer than 2 cells; drop or merge"
    ):
        model.fit(lonely, label_key="cell_type")
    unlabelled = reference.copy()
    unlabelled.obs["cell_type"] = np.nan
    with pytest.raises(ValueError, match="holds no label"):
        model.fit(unlabelled, label_key="cell_type")
    partly = reference.copy()
    partly.obs["cell_type"] = partly.obs["cell_type"].astype(object)
    partly.obs.iloc[:3, 0] = None
    with pytest.raises(ValueError, match="3 cell\\(s\\) have no label"):
        model.fit(partly, label_key="cell_type")
    single = reference[reference.obs["cell_type"] == "type 0"].copy()
    with pytest.raises(ValueError, match="has one type"):
        model.fit(single, label_key="cell_type")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['epoch'\]"):
        CellTypeClassifier(epoch=3)
    with pytest.raises(ValueError, match="clip must be one of"):
        CellTypeClassifier(clip="relu")
    with pytest.raises(ValueError, match=r"p_on must be in \(0, 1\]"):
        CellTypeClassifier(p_on=0.0)


def test_predicting_before_fitting_says_what_to_do(target) -> None:
    with pytest.raises(RuntimeError, match="call fit"):
        CellTypeClassifier(**FAST).predict(target)
