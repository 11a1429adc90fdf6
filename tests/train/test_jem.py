"""The JEM/CLAMS loop: the shared divergence guard and the best-validation checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acsleuth.nn.ebm import EnergyClassifier
from acsleuth.train import TrainingDiverged
from acsleuth.train.jem import JEMConfig, train_jem

CONFIG = JEMConfig(
    epochs=3, batch_size=16, lr=1e-3, buffer_size=64, sgld_steps=2, p_on=1.0, sgld_start="noise"
)


class Batches:
    """Two toy batches per epoch; batch ``poison`` of the first ``n_poisoned`` passes holds a NaN."""

    def __init__(self, n_poisoned: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(32, 6, generator=gen)
        self.labels = (self.x[:, 0] > 0.5).long()
        self.n_poisoned, self.passes = n_poisoned, 0

    def __iter__(self):
        self.passes += 1
        for rows in (np.arange(16), np.arange(16, 32)):
            x = self.x[rows].clone()
            if self.passes <= self.n_poisoned and rows[0] == 16:
                x[3, 2] = float("nan")
            yield rows, x


def network() -> EnergyClassifier:
    torch.manual_seed(0)
    return EnergyClassifier(6, 2, widths=(8,), blocks=(1,))


def test_a_nan_in_training_triggers_the_guard_which_restores_and_goes_on() -> None:
    batches, model = Batches(n_poisoned=1), network()
    result = train_jem(
        model, batches, batches.labels, lambda: (0.5, 0.0), CONFIG, seed=0, verbose=False
    )
    assert result.divergences == 1  # epoch 1 restored once, then retried on clean data
    assert len(result.history) == CONFIG.epochs and batches.passes == CONFIG.epochs + 1
    assert all(np.isfinite(list(h.values())).all() for h in result.history)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nans_that_persist_past_every_retry_stop_training_with_one_line() -> None:
    batches = Batches(n_poisoned=100)
    with pytest.raises(
        TrainingDiverged,
        match=r"classifier: training diverged at epoch 1 \(.*nan.*\) after 3 restarts",
    ):
        train_jem(
            network(), batches, batches.labels, lambda: (0.5, 0.0), CONFIG, seed=0, verbose=False
        )


def test_the_best_validation_epoch_is_kept() -> None:
    batches, model = Batches(n_poisoned=0), network()
    scores = iter([(0.5, -1.0), (0.9, -2.0), (0.9, -3.0)])  # epoch 2 is best (ties: higher -NLL)
    kept = {}

    def validate() -> tuple[float, float]:
        score = next(scores)
        kept[score] = {k: v.clone() for k, v in model.state_dict().items()}
        return score

    result = train_jem(model, batches, batches.labels, validate, CONFIG, seed=0, verbose=False)
    assert result.best_epoch == 1 and result.best_validation == (0.9, -2.0)
    for name, value in model.state_dict().items():
        assert torch.equal(value, kept[(0.9, -2.0)][name])


def test_without_validation_the_last_epoch_is_kept() -> None:
    batches, model = Batches(n_poisoned=0), network()
    result = train_jem(model, batches, batches.labels, None, CONFIG, seed=0, verbose=False)
    assert result.best_epoch == CONFIG.epochs - 1 and len(result.history) == CONFIG.epochs
    again = network()
    train_jem(again, Batches(n_poisoned=0), batches.labels, None, CONFIG, seed=0, verbose=False)
    for name, value in model.state_dict().items():  # the last epoch's weights, as a rerun's
        assert torch.equal(value, again.state_dict()[name])


def test_chains_started_from_data_need_a_sampler_of_training_cells() -> None:
    batches = Batches(n_poisoned=0)
    with pytest.raises(ValueError, match="sgld_start='data' needs start="):
        train_jem(
            network(),
            batches,
            batches.labels,
            lambda: (0.5, 0.0),
            JEMConfig(epochs=1, sgld_start="data"),
            seed=0,
            verbose=False,
        )
    start_calls = []

    def start(n: int) -> torch.Tensor:
        start_calls.append(n)
        return batches.x[torch.randint(0, 32, (n,))]

    config = JEMConfig(epochs=1, batch_size=16, buffer_size=64, sgld_steps=1, p_on=1.0, reinit=0.0)
    train_jem(
        network(),
        batches,
        batches.labels,
        lambda: (0.5, 0.0),
        config,
        seed=0,
        verbose=False,
        start=start,
    )
    assert start_calls[0] == 64  # the buffer is filled from the sampler
