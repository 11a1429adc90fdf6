"""Saved models carry a format version; load refuses what it cannot read, in one line each."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import FAST_PIPELINE

from acsleuth import ACsleuth, datasets, ops
from acsleuth.model import persist


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    reference, target = datasets.synthetic(60, 40, 30, anomaly_ratio=0.25, seed=5)
    model = ACsleuth(**FAST_PIPELINE, random_state=3).fit(reference)
    return model.save(tmp_path_factory.mktemp("m") / "model"), model, target


def _copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved[0], tmp_path / "copy")


def test_the_saved_config_names_the_format_load_reads(saved) -> None:
    config = json.loads((saved[0] / persist.CONFIG_FILE).read_text())
    assert config["format"] == persist.FORMAT == 1
    assert ACsleuth.load(saved[0]).genes_ == saved[1].genes_


@pytest.mark.parametrize("value", [None, 2, "1"])
def test_load_refuses_another_format_in_one_line(saved, tmp_path, value) -> None:
    path = _copy(saved, tmp_path)
    config = json.loads((path / persist.CONFIG_FILE).read_text())
    config["format"] = value
    if value is None:
        del config["format"]
    (path / persist.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"format .* reads format 1") as err:
        ACsleuth.load(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", [persist.CONFIG_FILE, persist.WEIGHTS_FILE])
def test_load_refuses_a_missing_file_naming_it(saved, tmp_path, name) -> None:
    path = _copy(saved, tmp_path)
    (path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{name} is missing"):
        ACsleuth.load(path)


def test_load_refuses_genes_that_do_not_match_the_weights(saved, tmp_path) -> None:
    path = _copy(saved, tmp_path)
    config = json.loads((path / persist.CONFIG_FILE).read_text())
    n_genes = len(config["genes"])
    config["genes"] = config["genes"][:-1]
    (path / persist.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=f"weights are for {n_genes} genes but config.json lists {n_genes - 1}"
    ) as err:
        ACsleuth.load(path)
    assert "\n" not in str(err.value)


def test_load_refuses_a_config_that_is_not_json(saved, tmp_path) -> None:
    path = _copy(saved, tmp_path)
    (path / persist.CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        ACsleuth.load(path)


def test_uns_records_the_backend_of_the_device_that_ran(saved, monkeypatch) -> None:
    _, model, target = saved
    asked = []

    def backend(device=None):  # the device must be named: a GPU run was recorded as "cpu"
        asked.append(device)
        return f"ops on {torch.device(device).type}"

    monkeypatch.setattr(ops, "backend", backend)
    out = model.run(None, target.copy(), correct=False, n_subtypes=1)
    assert out.uns["acsleuth"]["backend"] == f"ops on {model.device.type}"
    assert asked == [model.device]
