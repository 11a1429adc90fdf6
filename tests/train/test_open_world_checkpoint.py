"""Checkpoints of the scDET training loop: an interrupted and resumed fit equals an
uninterrupted one (seeded, CPU), and the resumable batch stream replays exactly (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth import datasets
from acsleuth.data import MinibatchLoader, prepare
from acsleuth.model.annotator import OpenWorldAnnotator
from acsleuth.train import Checkpoint, TrainingInterrupted, contrastive
from acsleuth.train.contrastive import CyclingBatches, OpenWorldConfig

# 160 target cells / 64 = 2 steps an epoch; the prior is re-estimated at epochs 0, 2, 4
TINY = OpenWorldConfig(epochs=5, batch_size=64, estimate_every=2, kmeans_iter=5, kmeans_init=1)


@pytest.fixture(scope="module")
def data():
    return datasets.synthetic(100, 160, 40, n_types=3, n_anomaly_types=1, anomaly_ratio=0.3, seed=1)


def _fit(data, checkpoint: Checkpoint | None = None) -> OpenWorldAnnotator:
    ref, tgt = data
    model = OpenWorldAnnotator(4, config=TINY, seed=3)
    return model.fit(ref, tgt, label_key="cell_type", checkpoint=checkpoint)


def _interrupt_at_step(monkeypatch, step: int, error: type[BaseException] = KeyboardInterrupt):
    """Raise ``error`` (Ctrl-C by default) in the ``step``-th training step (1-based)."""
    real = contrastive.step_loss
    calls = iter(range(1, 10_000))

    def interrupted(*args, **kwargs):
        if next(calls) == step:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(contrastive, "step_loss", interrupted)


def _assert_same_model(a: OpenWorldAnnotator, b: OpenWorldAnnotator) -> None:
    assert len(a.nets) == len(b.nets) == 2
    for net_a, net_b in zip(a.nets, b.nets, strict=True):
        for (name, x), (_, y) in zip(
            net_a.state_dict().items(), net_b.state_dict().items(), strict=True
        ):
            assert torch.equal(x, y), name
    assert a.history == b.history
    assert [p.shape for p in a.priors] == [p.shape for p in b.priors] == [(3, 4)] * 2
    for p, q in zip(a.priors, b.priors, strict=True):
        np.testing.assert_array_equal(p, q)
    for o, r in zip(a.slot_orders, b.slot_orders, strict=True):
        np.testing.assert_array_equal(o, r)


@pytest.mark.parametrize(
    ("step", "stage"),
    [
        (6, "annotate 1/2"),  # the second step of the first network's epoch 2 (after its estimate)
        (16, "annotate 2/2"),  # the first network takes steps 1-10: the second's epoch 2
    ],
)
def test_interrupted_and_resumed_fit_equals_an_uninterrupted_one(
    data, tmp_path, monkeypatch, step, stage
):
    whole = _fit(data)
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, step)
        with pytest.raises(TrainingInterrupted, match="after 2 complete epoch"):
            _fit(data, Checkpoint(tmp_path / "ckpt"))
    state = torch.load(tmp_path / "ckpt" / "training.pt", weights_only=True)
    assert state["stage"] == stage
    # in the second network's stage the first one's is finished: a resumed run skips it, and its
    # weights and prior estimates come back with the second's state
    assert ("member0.net" in state["objects"]) == (stage == "annotate 2/2")
    resumed = _fit(data, Checkpoint(tmp_path / "ckpt", resume=True))
    _assert_same_model(whole, resumed)
    _, tgt = data
    np.testing.assert_array_equal(whole.predict(tgt).proba, resumed.predict(tgt).proba)


def test_periodic_checkpoint_resumes_after_its_last_epoch(data, tmp_path, monkeypatch):
    whole = _fit(data)
    with monkeypatch.context() as patch:
        # a crash (no Ctrl-C handler runs) in epoch 3: the last checkpoint is after epoch 2
        _interrupt_at_step(patch, 8, RuntimeError)
        with pytest.raises(RuntimeError):
            _fit(data, Checkpoint(tmp_path / "ckpt", every=2))
    state = torch.load(tmp_path / "ckpt" / "training.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert len(state["objects"]["priors"]["estimates"]) == 1  # epoch 2's estimate is redone
    _assert_same_model(whole, _fit(data, Checkpoint(tmp_path / "ckpt", resume=True)))


def test_resuming_with_other_settings_is_refused(data, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 3)
        with pytest.raises(TrainingInterrupted):
            _fit(data, Checkpoint(tmp_path / "ckpt"))
    ref, tgt = data
    other = OpenWorldAnnotator(4, config=TINY, seed=4)
    with pytest.raises(ValueError, match="seed: 3 then, 4 now"):
        other.fit(
            ref, tgt, label_key="cell_type", checkpoint=Checkpoint(tmp_path / "ckpt", resume=True)
        )


def test_cycling_batches_resume_mid_pass(data) -> None:
    ref, _ = data
    loader = MinibatchLoader(prepare(ref, name="reference"), batch_size=32, shuffle=True, seed=0)
    stream = CyclingBatches(loader)  # 100 cells: 4 batches a pass
    for _ in range(6):
        next(stream)
    state = stream.state_dict()
    expected = [next(stream)[0] for _ in range(5)]  # crosses into the third pass
    other = CyclingBatches(
        MinibatchLoader(prepare(ref, name="reference"), batch_size=32, shuffle=True, seed=99)
    )
    other.load_state_dict(state)
    got = [next(other)[0] for _ in range(5)]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)
    assert sorted(np.concatenate(expected[:2]).tolist()) != list(range(64))  # shuffled rows
