"""Long runs: checkpoints, exact resume after Ctrl-C or a kill, and the divergence guard."""

from __future__ import annotations

import logging
import signal
import time

import numpy as np
import pytest
import torch
from _helpers import (
    FAST_PIPELINE,
    cli_command,
    cli_run,
    cli_start,
    cli_stop,
    cli_wait_for,
    two_batches,
)
from torch import nn

import acsleuth
from acsleuth.train import (
    AdversarialConfig,
    AdversarialStep,
    Checkpoint,
    TrainingDiverged,
    TrainingInterrupted,
    adversarial,
    train_adversarial,
)

RUN_SETTINGS = {**FAST_PIPELINE, "prepare_epochs": 4, "train_epochs": 3, "style_epochs": 3}
# Critic updates (one gradient penalty each) of one run of RUN_SETTINGS on ``data``: module I takes
# 4 batches x 2 critic steps per epoch for 7 epochs, the style transfer 1 x 3 for 3 epochs (the
# default calls leave 50 normal cells: one full batch of 32).
MODULE_I_UPDATES, ALL_UPDATES = 56, 65


@pytest.fixture(scope="module")
def data():
    return two_batches(150, 60)  # the data of the child runs (write_cli_inputs)


@pytest.fixture(scope="module")
def uninterrupted(data):
    reference, target = data
    target = target.copy()
    acsleuth.ACsleuth(**RUN_SETTINGS).run(reference, target, batch_key="batch")
    return target


def _run(data, checkpoint: Checkpoint):
    reference, target = data
    target = target.copy()
    acsleuth.ACsleuth(**RUN_SETTINGS).run(
        reference, target, batch_key="batch", checkpoint=checkpoint
    )
    return target


def _interrupt_at(monkeypatch, n_updates: int) -> None:
    """Ctrl-C (KeyboardInterrupt) in the ``n_updates``-th critic update of an adversarial stage."""
    penalty, calls = adversarial.critic_terms, [0]

    def interrupted(*args):
        calls[0] += 1
        if calls[0] == n_updates:
            raise KeyboardInterrupt
        return penalty(*args)

    monkeypatch.setattr(adversarial, "critic_terms", interrupted)


def _assert_same_results(a, b) -> None:
    np.testing.assert_array_equal(a.obs["acsleuth_score"], b.obs["acsleuth_score"])
    np.testing.assert_array_equal(a.obs["acsleuth_anomaly"], b.obs["acsleuth_anomaly"])
    np.testing.assert_array_equal(
        a.obs["acsleuth_subtype"].astype(str), b.obs["acsleuth_subtype"].astype(str)
    )
    np.testing.assert_array_equal(a.layers["acsleuth_corrected"], b.layers["acsleuth_corrected"])


# Interrupt points drawn at random (seeded) over module I's two stages and the style transfer.
INTERRUPTS = sorted(
    int(n) for n in np.random.default_rng(7).choice(np.arange(1, ALL_UPDATES + 1), 4, replace=False)
)


# Fixed points: one in module I's "prepare" stage (updates 1-32), the first of the style transfer.
@pytest.mark.parametrize("n_updates", sorted({*INTERRUPTS, 11, MODULE_I_UPDATES + 1}))
def test_ctrl_c_at_a_random_step_then_resume_gives_identical_results(
    data, uninterrupted, tmp_path, monkeypatch, n_updates
) -> None:
    _interrupt_at(monkeypatch, n_updates)
    with pytest.raises(TrainingInterrupted) as info:
        _run(data, Checkpoint(tmp_path / "ckpt", every=2))
    assert info.value.folder == tmp_path / "ckpt"
    assert (tmp_path / "ckpt" / "training.pt").is_file()
    monkeypatch.undo()
    _assert_same_results(
        _run(data, Checkpoint(tmp_path / "ckpt", every=2, resume=True)), uninterrupted
    )


def test_a_checkpoint_is_written_every_n_epochs_and_at_each_stage_end(
    data, tmp_path, monkeypatch
) -> None:
    saved = []
    save = Checkpoint.save
    monkeypatch.setattr(
        Checkpoint,
        "save",
        lambda self, stage, epoch, *a, **k: (
            saved.append((stage, epoch)),
            save(self, stage, epoch, *a, **k),
        ),
    )
    _run(data, Checkpoint(tmp_path / "ckpt", every=2))
    assert saved == [
        ("prepare", 2),
        ("prepare", 4),
        ("train", 2),
        ("train", 3),
        ("style", 2),
        ("style", 3),
    ]
    assert (tmp_path / "ckpt" / "model" / "weights.pt").is_file()  # the fitted model, for a resume


def test_resuming_a_finished_fit_reads_the_model_instead_of_training(
    data, uninterrupted, tmp_path, monkeypatch
) -> None:
    _interrupt_at(monkeypatch, MODULE_I_UPDATES + 5)  # in the style transfer
    with pytest.raises(TrainingInterrupted):
        _run(data, Checkpoint(tmp_path / "ckpt"))
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(acsleuth.stages.detect, "train_detector", lambda *a, **k: calls.append(1))
    _assert_same_results(_run(data, Checkpoint(tmp_path / "ckpt", resume=True)), uninterrupted)
    assert calls == []


def test_resume_refuses_a_checkpoint_of_another_run(data, tmp_path, monkeypatch) -> None:
    _interrupt_at(monkeypatch, 20)
    with pytest.raises(TrainingInterrupted):
        _run(data, Checkpoint(tmp_path / "ckpt"))
    monkeypatch.undo()
    reference, _ = data
    with pytest.raises(ValueError, match=r"different run \(train_epochs: 3 then, 5 now\)"):
        acsleuth.ACsleuth(**{**RUN_SETTINGS, "train_epochs": 5}).fit(
            reference, checkpoint=Checkpoint(tmp_path / "ckpt", resume=True)
        )


def test_an_earlier_checkpoint_is_never_overwritten_without_resume(
    data, tmp_path, monkeypatch
) -> None:
    _interrupt_at(monkeypatch, 20)
    with pytest.raises(TrainingInterrupted):
        _run(data, Checkpoint(tmp_path / "ckpt"))
    before = (tmp_path / "ckpt" / "training.pt").read_bytes()
    with pytest.raises(FileExistsError, match=r"--resume .* or delete the folder"):
        Checkpoint(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "training.pt").read_bytes() == before


def test_removing_a_checkpoint_clears_what_a_killed_write_left_but_nothing_else(
    data, tmp_path
) -> None:
    reference, _ = data
    checkpoint = Checkpoint(tmp_path / "ckpt", every=2)
    acsleuth.ACsleuth(**RUN_SETTINGS).fit(reference, checkpoint=checkpoint)
    (tmp_path / "ckpt" / ".training.pt.x1y2.pt").write_bytes(b"half")  # as kill -9 leaves them
    (tmp_path / "ckpt" / ".model.a1b2").mkdir()
    checkpoint.remove()
    assert not (tmp_path / "ckpt").exists()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "notes.txt").write_text("mine")
    checkpoint.remove()
    assert (tmp_path / "ckpt" / "notes.txt").read_text() == "mine"


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .* run without --resume"):
        Checkpoint(tmp_path / "nothing", resume=True)


def test_a_damaged_checkpoint_is_refused_clearly(tmp_path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "training.pt").write_bytes(b"\x80\x04 half a pickle")
    with pytest.raises(
        ValueError, match=r"not a readable acsleuth checkpoint .* delete the folder"
    ):
        Checkpoint(tmp_path / "ckpt", resume=True)


# ---------------------------------------------------------------------------------- divergence
class _Toy:
    """A linear generator against a small critic, whose step can be made to blow up."""

    def __init__(self, blow_up) -> None:
        torch.manual_seed(0)
        self.generator = nn.Linear(8, 8)
        self.critic = nn.Sequential(nn.Linear(8, 4))
        self.blow_up = blow_up
        self.epoch_of_step = []

    def batches(self):
        return [torch.randn(16, 8) for _ in range(3)]

    def step(self, x):
        fake = self.generator(x)
        own = (fake - x).abs().mean()
        if self.blow_up(self):
            own = own * float("nan")
        return AdversarialStep(x, fake, own)

    def train(self, config, **kwargs):
        return train_adversarial(
            list(self.generator.parameters()),
            self.critic,
            self.batches,
            self.step,
            config,
            desc="toy",
            verbose=False,
            state={"generator": self.generator},
            **kwargs,
        )


def test_a_nan_epoch_is_rolled_back_and_retried_at_half_the_learning_rate(caplog) -> None:
    calls = [0]

    def once(_):  # the 5th step (epoch 2) returns NaN, the retry does not
        calls[0] += 1
        return calls[0] == 5

    toy = _Toy(once)
    with caplog.at_level(logging.WARNING, logger="acsleuth"):
        history = toy.train(AdversarialConfig(epochs=4, lr=1e-3))
    assert len(history) == 4
    assert all(np.isfinite(v) for epoch in history for v in epoch.values())
    assert all(torch.isfinite(p).all() for p in toy.generator.parameters())
    assert "toy: epoch 2 diverged (" in caplog.text and "own loss nan)" in caplog.text
    assert "halved the learning rate to 0.0005 (retry 1 of 3)" in caplog.text


def test_training_that_keeps_diverging_stops_with_a_clear_message() -> None:
    toy = _Toy(lambda _: True)
    with pytest.raises(
        TrainingDiverged,
        match=r"toy: training diverged at epoch 1 \(.*own loss nan\) after 3 "
        r"restarts .* \(last 0.000125\); check the input for extreme values",
    ):
        toy.train(AdversarialConfig(epochs=2, lr=1e-3))


def test_an_exploding_critic_counts_as_divergence() -> None:
    toy = _Toy(lambda _: False)
    with pytest.raises(TrainingDiverged, match=r"critic loss .* exploded past 1e-09"):
        toy.train(AdversarialConfig(epochs=2, max_critic_loss=1e-9, max_retries=1))


def test_a_retry_after_divergence_is_checkpointed_and_resumed_exactly(
    tmp_path, monkeypatch
) -> None:
    calls = [0]

    def once(_):
        calls[0] += 1
        return calls[0] == 4

    config = AdversarialConfig(epochs=5, lr=1e-3)
    whole = _Toy(once)
    expected = whole.train(config)
    calls[0] = 0
    first = _Toy(once)
    _interrupt_at(monkeypatch, 3 * 2 * 4 + 2)  # in epoch 4, after the retried epoch 2
    with pytest.raises(TrainingInterrupted) as info:
        first.train(config, checkpoint=Checkpoint(tmp_path / "ckpt"))
    assert info.value.epoch == 3
    monkeypatch.undo()
    resumed = _Toy(lambda _: False)
    assert resumed.train(config, checkpoint=Checkpoint(tmp_path / "ckpt", resume=True)) == expected
    for a, b in zip(resumed.generator.parameters(), whole.generator.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_cli_interrupted_or_killed_mid_training_resumes_to_identical_outputs(
    cli_baseline, tmp_path, sig
) -> None:
    out = tmp_path / "out"
    args = cli_command(cli_baseline, out, "--checkpoint-every", "3")
    process = cli_start(args)
    assert cli_wait_for(out.with_name("out.checkpoint") / "training.pt", process)
    time.sleep(np.random.default_rng(int(sig)).uniform(0, 0.5))  # a random epoch
    code, err = cli_stop(process, sig)
    assert not out.exists()
    if sig == signal.SIGINT:
        # in a training epoch or between stages: either way one line naming the checkpoint
        assert code == 130
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "interrupted" in err and "checkpoint in" in err and "--resume" in err
    again = cli_run(args)  # without --resume: refused, the checkpoint kept
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = cli_run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "cells.csv").read_text() == (
        cli_baseline / "uninterrupted" / "cells.csv"
    ).read_text()
    assert not out.with_name("out.checkpoint").exists()  # removed once the outputs are complete
