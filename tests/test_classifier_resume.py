"""CLAMS checkpoints: a JEM run interrupted (Ctrl-C) and resumed from its checkpoint ends with
the weights of an uninterrupted run, through the API and through ``acsleuth classify --resume``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from classify_toy import FAST, toy

from acsleuth import CellTypeClassifier
from acsleuth.cli import main
from acsleuth.train import Checkpoint, TrainingInterrupted, jem

SETTINGS = {**FAST, "epochs": 5}


def _interrupt_at(monkeypatch, call: int) -> None:
    """Ctrl-C inside the ``call``-th SGLD chain (the middle of an epoch's generative step)."""
    calls, sgld = [0], jem.sgld

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return sgld(*args, **kwargs)

    monkeypatch.setattr(jem, "sgld", counted)


def _fit(reference, checkpoint=None) -> CellTypeClassifier:
    model = CellTypeClassifier(random_state=0, **SETTINGS)
    return model.fit(reference, label_key="cell_type", checkpoint=checkpoint)


@pytest.fixture(scope="module")
def reference():
    return toy(seed=0)


def test_an_interrupted_fit_resumed_from_its_checkpoint_ends_with_the_same_weights(
    reference, tmp_path, monkeypatch
) -> None:
    uninterrupted = _fit(reference)
    _interrupt_at(monkeypatch, 4)
    with pytest.raises(TrainingInterrupted) as info:
        _fit(reference, Checkpoint(tmp_path / "ckpt", every=2))
    assert 0 < info.value.epoch < SETTINGS["epochs"]  # stopped part-way
    monkeypatch.undo()
    resumed = _fit(reference, Checkpoint(tmp_path / "ckpt", every=2, resume=True))
    for name, value in uninterrupted.network_.state_dict().items():
        assert torch.equal(resumed.network_.state_dict()[name], value), name
    assert resumed.history_ == uninterrupted.history_
    assert resumed.threshold_ == uninterrupted.threshold_
    target = toy(n_per_type=10, types=(0, 3), seed=3)
    np.testing.assert_array_equal(
        resumed.score_samples(target), uninterrupted.score_samples(target)
    )


def test_resuming_with_other_settings_is_refused_in_one_line(
    reference, tmp_path, monkeypatch
) -> None:
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted):
        _fit(reference, Checkpoint(tmp_path / "ckpt"))
    monkeypatch.undo()
    other = CellTypeClassifier(random_state=1, **SETTINGS)
    with pytest.raises(ValueError, match=r"different run \(random_state: 0 then, 1 now\)"):
        other.fit(
            reference, label_key="cell_type", checkpoint=Checkpoint(tmp_path / "ckpt", resume=True)
        )


def _classify(folder, out: str, *extra: str) -> int:
    args = ["classify", "--reference", str(folder / "ref.h5ad"), "--target"]
    args += [str(folder / "tgt.h5ad"), "--label-key", "cell_type", "--out", str(folder / out)]
    return main([*args, "--device", "cpu", "--quiet", "--epochs", "3", *extra])


def test_the_command_resumes_an_interrupted_training(tmp_path, monkeypatch, capsys) -> None:
    toy(seed=0).write_h5ad(tmp_path / "ref.h5ad")
    toy(n_per_type=20, types=(0, 1, 3), seed=2).write_h5ad(tmp_path / "tgt.h5ad")
    assert _classify(tmp_path, "plain") == 0
    _interrupt_at(monkeypatch, 2)
    assert _classify(tmp_path, "out", "--checkpoint-every", "1") == 130
    err = capsys.readouterr().err
    assert "rerun the same command with --resume" in err and not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert (tmp_path / "out.checkpoint" / "training.pt").is_file()
    assert _classify(tmp_path, "out", "--checkpoint-every", "1", "--resume") == 0
    assert not (tmp_path / "out.checkpoint").exists()  # served, then removed
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "out" / "cells.csv"), pd.read_csv(tmp_path / "plain" / "cells.csv")
    )
    assert _classify(tmp_path, "again", "--model", str(tmp_path / "out" / "model"), "--resume") == 2
    assert "drop --reference, --epochs and the checkpoint options" in capsys.readouterr().err
