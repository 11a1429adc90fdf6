"""Checkpoints of a run: the training state of the adversarial stages, and the fitted model.

A :class:`Checkpoint` is a folder. The training loop
(:func:`~acsleuth.train.train_adversarial`) writes ``training.pt`` every ``every`` epochs,
at the end of each stage and when interrupted (Ctrl-C); :class:`~acsleuth.ACsleuth` writes
the fitted model into ``model/``. Each write goes to a temporary name and is renamed, so a
run killed at any moment leaves the previous checkpoint intact.

A resumed run replays nothing it has finished: stages recorded as complete are skipped, the
stage in progress restores every piece of state that decides what comes next (weights,
optimiser moments, the memory bank, the minibatch shuffler, torch's random generator) and
continues from its next epoch, so on the CPU it ends with bit-identical results.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from .._atomic import atomic_path

TRAINING_FILE = "training.pt"
MODEL_DIR = "model"


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised once the checkpoint in ``folder`` was written: it holds
    ``epoch`` complete epochs of ``stage``."""

    def __init__(self, stage: str, epoch: int, folder: Path) -> None:
        super().__init__(
            f"interrupted in stage {stage!r} after {epoch} complete epoch(s); the checkpoint in "
            f"{folder} continues the run (Checkpoint({str(folder)!r}, resume=True))"
        )
        self.stage, self.epoch, self.folder = stage, epoch, folder


class TorchRandomState:
    """torch's global random generator (and the device's, on CUDA) as a :class:`Stateful`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)


def snapshot(objects: Mapping[str, Stateful]) -> dict[str, Any]:
    """A deep copy of every object's state (module state dicts alias the live weights)."""
    return {name: copy.deepcopy(obj.state_dict()) for name, obj in objects.items()}


def states_of(objects: Mapping[str, Stateful]) -> dict[str, Any]:
    """Every object's state, without copying (to be written at once)."""
    return {name: obj.state_dict() for name, obj in objects.items()}


def restore(objects: Mapping[str, Stateful], states: Mapping[str, Any]) -> None:
    """Load a :func:`snapshot` back (a copy of it, so the snapshot can be restored again)."""
    for name, obj in objects.items():
        obj.load_state_dict(copy.deepcopy(states[name]))


class Checkpoint:
    """The checkpoint folder of one run.

    Parameters
    ----------
    folder
        Where the checkpoint lives; created when first written.
    every
        Write the training state every ``every`` epochs of an adversarial stage (0: only at
        the end of each stage and on Ctrl-C).
    resume
        Continue the run checkpointed in ``folder`` (which must hold one). Without it, a
        ``folder`` holding a checkpoint is refused rather than overwritten.
    """

    def __init__(self, folder: str | os.PathLike, *, every: int = 0, resume: bool = False) -> None:
        if int(every) < 0:
            raise ValueError(f"checkpoint: every must be >= 0 epochs, got {every}")
        self.folder = Path(folder)
        self.every = int(every)
        self.fingerprint: dict[str, Any] = {}
        self.completed: dict[str, list[dict[str, float]]] = {}
        self._pending: dict[str, Any] | None = None
        self.resuming = bool(resume)
        if resume:
            self._pending = self._read()
            self._saved_fingerprint = dict(self._pending["fingerprint"])
            self.completed = dict(self._pending["completed"])
        elif self.holds_checkpoint():
            raise FileExistsError(
                f"{self.folder} holds the checkpoint of an earlier run: continue it with --resume "
                "(resume=True), or delete the folder to start afresh"
            )

    def bind(self, fingerprint: Mapping[str, Any]) -> None:
        """Tie the checkpoint to one run: ``fingerprint`` says what makes two runs the same (the
        settings and the inputs). Resuming a checkpoint written with another value of any of
        its keys is refused, naming the differences; keys of later calls are added."""
        if self.resuming:
            saved = self._saved_fingerprint
            differences = sorted(
                k for k in saved.keys() & fingerprint.keys() if saved[k] != fingerprint[k]
            )
            if differences:
                detail = "; ".join(
                    f"{k}: {saved[k]!r} then, {fingerprint[k]!r} now" for k in differences
                )
                raise ValueError(
                    f"--resume: the checkpoint in {self.folder} is of a different run ({detail}); "
                    "resume with the same inputs and settings, or delete the folder to start afresh"
                )
        self.fingerprint.update(fingerprint)

    def remove(self) -> None:
        """Delete the checkpoint (once the run's outputs are written), with the temporaries a
        killed write left behind."""
        self.training_file.unlink(missing_ok=True)
        if self.model_dir.is_dir():
            shutil.rmtree(self.model_dir)
        for name in (TRAINING_FILE, MODEL_DIR):  # atomic_path / atomic_dir name them ".NAME.*"
            for leftover in self.folder.glob(f".{name}.*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        with contextlib.suppress(OSError):  # left in place when it holds anything else
            self.folder.rmdir()

    # ------------------------------------------------------------------ files
    @property
    def training_file(self) -> Path:
        return self.folder / TRAINING_FILE

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL_DIR

    def holds_checkpoint(self) -> bool:
        return self.training_file.is_file() or self.model_dir.is_dir()

    def _read(self) -> dict[str, Any]:
        if not self.training_file.is_file():
            raise FileNotFoundError(
                f"--resume: no checkpoint in {self.folder} ({TRAINING_FILE} is missing); "
                "run without --resume to start afresh"
            )
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol of bad files
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(self.training_file, map_location="cpu", weights_only=True)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
            raise ValueError(
                f"--resume: {self.training_file} is not a readable acsleuth checkpoint "
                f"({type(err).__name__}: {str(err).splitlines()[0][:100]}); "
                "delete the folder to start afresh"
            ) from err
        return state

    def has_model(self) -> bool:
        """Whether a resumed run's fitted model was checkpointed (fitting is then skipped)."""
        return self.resuming and self.model_dir.is_dir()

    # ------------------------------------------------------------------ training
    def begin(
        self, stage: str, objects: Mapping[str, Stateful]
    ) -> tuple[int, list[dict[str, float]], float]:
        """Where ``stage`` starts: ``(epoch, history so far, learning-rate scale)``.

        The stage the checkpoint was written in gets ``objects`` restored and continues after
        its last saved epoch (at its end, when it had finished: the next stage then starts
        from its final state); another stage the checkpoint records as complete is skipped;
        any other stage starts afresh.
        """
        if self._pending is not None and self._pending["stage"] == stage:
            pending, self._pending = self._pending, None
            restore(objects, pending["objects"])
            return int(pending["epoch"]), list(pending["history"]), float(pending["lr_scale"])
        if stage in self.completed:
            history = list(self.completed[stage])
            return len(history), history, 1.0
        self._pending = None  # the checkpoint is of stages this run has already passed
        return 0, [], 1.0

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether the training state is written after ``epoch`` (1-based) of ``epochs``."""
        return epoch == epochs or (self.every > 0 and epoch % self.every == 0)

    def save(
        self,
        stage: str,
        epoch: int,
        history: list[dict[str, float]],
        states: Mapping[str, Any],
        *,
        lr_scale: float = 1.0,
        done: bool = False,
    ) -> None:
        """Write the training state (``states``: :func:`states_of` the live objects, or a
        :func:`snapshot`) after ``epoch`` epochs of ``stage``."""
        if done:
            self.completed[stage] = list(history)
        state = {
            "fingerprint": self.fingerprint,
            "completed": self.completed,
            "stage": stage,
            "epoch": epoch,
            "history": history,
            "lr_scale": lr_scale,
            "objects": dict(states),
        }
        with atomic_path(self.training_file, overwrite=True) as tmp:
            torch.save(state, tmp)

    def interrupted(self, stage: str, epoch: int) -> TrainingInterrupted:
        return TrainingInterrupted(stage, epoch, self.folder)


@contextlib.contextmanager
def checkpointed_on_interrupt(
    checkpoint: Checkpoint | None,
    stage: str,
    epoch: int,
    history: list[dict[str, float]],
    good: Mapping[str, Any],
    lr_scale: float,
) -> Iterator[None]:
    """Around one epoch: on Ctrl-C write ``good`` (the state before the epoch) to
    ``checkpoint`` and raise :class:`TrainingInterrupted` (without a checkpoint, re-raise)."""
    try:
        yield
    except KeyboardInterrupt:
        if checkpoint is None:
            raise
        checkpoint.save(stage, epoch, history, good, lr_scale=lr_scale)
        raise checkpoint.interrupted(stage, epoch) from None


def fingerprint(params: Mapping[str, Any], **inputs: Any) -> dict[str, Any]:
    """What makes two runs the same run, for :meth:`Checkpoint.bind`: the ``params`` that
    change results (all but ``device``, ``verbose`` and ``n_jobs``), and each input's shape (and file,
    when read from one); an input is an AnnData, a path or None (left out)."""
    from anndata import AnnData

    result = {k: v for k, v in params.items() if k not in ("device", "verbose", "n_jobs")}
    for name, data in inputs.items():
        if isinstance(data, AnnData):
            where = f" in {Path(data.filename).resolve()}" if data.isbacked else ""
            result[name] = f"{data.n_obs} cells x {data.n_vars} genes{where}"
        elif data is not None:
            result[name] = str(Path(data).resolve())
    return result
