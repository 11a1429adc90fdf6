"""Stage I: train the reconstruction GAN on the reference, reconstruct target cells (docs/method.md §1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import parallel
from .._constants import (
    ADVERSARIAL_WEIGHT,
    BETAS,
    GP_WEIGHT,
    LEARNING_RATE,
    N_CRITIC,
    RECONSTRUCTION_WEIGHT,
    Params,
    Precision,
)
from .._logging import stage_key, stage_timer
from .._precision import autocast
from ..data import ExpressionSource, MinibatchLoader
from ..data.checks import check_reference_size
from ..nn import Critic, Generator
from ..train import AdversarialConfig, AdversarialStep, Checkpoint, train_adversarial


@dataclass(frozen=True)
class DetectorConfig:
    """Module I training settings (docs/method.md §1 defaults)."""

    prepare_epochs: int = 50
    train_epochs: int = 20
    lr: float = LEARNING_RATE
    betas: tuple[float, float] = BETAS
    critic_steps: int = N_CRITIC
    reconstruction_weight: float = RECONSTRUCTION_WEIGHT
    adversarial_weight: float = ADVERSARIAL_WEIGHT
    gp_weight: float = GP_WEIGHT
    precision: Precision = "fp32"

    def stage(self, epochs: int, *, cosine: bool) -> AdversarialConfig:
        return AdversarialConfig(
            epochs=epochs,
            lr=self.lr,
            betas=self.betas,
            critic_steps=self.critic_steps,
            adversarial_weight=self.adversarial_weight,
            gp_weight=self.gp_weight,
            cosine=cosine,
            precision=self.precision,
        )


def train_detector(
    generator: Generator,
    critic: Critic,
    loader: Iterable[tuple[np.ndarray, Tensor]],
    config: DetectorConfig,
    *,
    verbose: bool = True,
    timings: dict[str, float] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Stage "prepare" (no memory), then stage "train" (memory on, cosine schedule).

    After every generator update of stage "train" the batch's encoder embeddings are
    enqueued into the memory bank. When ``timings`` is given, the seconds each stage took
    are added under "prepare" and "train" (keyed as :func:`~acsleuth._logging.stage_timer`
    does; 0.0 for a skipped stage).
    ``checkpoint`` resumes and checkpoints both stages (:func:`~acsleuth.train.train_adversarial`;
    a loader with a ``state_dict``, such as :class:`~acsleuth.data.MinibatchLoader`, has its
    shuffler checkpointed too).
    """
    if timings is None:
        timings = {}
    generator.train()
    critic.train()

    def batches() -> Iterable[Tensor]:
        return _Inputs(loader)

    def step(x: Tensor, *, use_memory: bool) -> AdversarialStep:
        x_hat, z = generator(x, use_memory=use_memory)
        own = config.reconstruction_weight * F.l1_loss(x_hat.float(), x)
        return AdversarialStep(x, x_hat, own, aux=z)

    state = {"generator": generator}
    if hasattr(loader, "state_dict"):
        state["loader"] = loader
    history = {}
    for name, epochs, use_memory in (
        ("prepare", config.prepare_epochs, False),
        ("train", config.train_epochs, True),
    ):
        if epochs == 0:
            history[name] = []
            timings.setdefault(stage_key(name), 0.0)
            continue
        with stage_timer(timings, name):  # ends after the epoch's loss read-back (a host sync)
            history[name] = train_adversarial(
                list(generator.parameters()),
                critic,
                batches,
                lambda x, use_memory=use_memory: step(x, use_memory=use_memory),
                config.stage(epochs, cosine=use_memory),
                after_step=(
                    (lambda _, out: generator.memory.enqueue(out.aux)) if use_memory else None
                ),
                desc=name,
                verbose=verbose,
                state=state,
                checkpoint=checkpoint,
            )
    generator.eval()
    critic.eval()
    return history


def fit_detector(
    source: ExpressionSource,
    params: Params,
    *,
    device: torch.device,
    resident_bytes: int,
    timings: dict[str, float],
    checkpoint: Checkpoint | None = None,
) -> tuple[Generator, Critic, dict[str, list[dict[str, float]]]]:
    """Module I built from ``params`` and trained on the reference ``source`` (each rank on its
    shard of cells, all ranks' networks alike); returns the generator, critic and history.

    Call it under a seeded torch RNG (the weights' initial values). Seconds go to
    ``timings["module I"]`` and its stages; ``resident_bytes`` of the training data may stay
    on ``device``.
    """
    ctx = parallel.context()
    check_reference_size(source.n_obs, ctx.world_size)
    rows = parallel.shard_rows(source.n_obs, ctx)  # all cells in a single process
    generator = Generator(source.n_genes, **params.generator_settings()).to(device)
    critic = Critic(source.n_genes).to(device)
    parallel.broadcast_module(generator, ctx)
    loader = MinibatchLoader(
        source,
        batch_size=min(max(2, params.batch_size // ctx.world_size), rows.size),
        shuffle=True,
        drop_last=True,
        seed=params.random_state + ctx.rank,
        device=device,
        resident_bytes=resident_bytes,
        rows=rows,
    )
    with stage_timer(timings, "module I"):
        history = train_detector(
            generator,
            critic,
            loader,
            params.detector_config(),
            verbose=params.verbose and ctx.is_main,
            timings=timings,
            checkpoint=checkpoint,
        )
        parallel.average_buffers(generator, ctx)
    return generator, critic, history


class _Inputs:
    """A sized loader's tensors without their row positions: distributed ranks then agree on
    the steps of an epoch once (:func:`acsleuth.parallel.lockstep`)."""

    def __init__(self, loader: Sequence[tuple[np.ndarray, Tensor]]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tensor]:
        return (x for _, x in self.loader)


class Reconstruction(NamedTuple):
    """One chunk of target cells: rows, input, reconstruction and both embeddings."""

    rows: np.ndarray
    x: Tensor
    x_hat: Tensor
    z: Tensor


@torch.inference_mode()
def reconstruct(
    generator: Generator,
    loader: Iterable[tuple[np.ndarray, Tensor]],
    *,
    precision: Precision = "fp32",
) -> Iterator[Reconstruction]:
    """``x_hat = D(mem(E(x)))`` chunk by chunk, in eval mode (float32 outputs; computed under
    bf16 autocast with ``precision="bf16"``)."""
    generator.eval()
    for rows, x in loader:
        with autocast(x.device, precision):
            x_hat, z = generator(x, use_memory=True)
        yield Reconstruction(rows, x, x_hat.float(), z.float())


@torch.inference_mode()
def residual_scale(
    generator: Generator,
    loader: Iterable[tuple[np.ndarray, Tensor]],
    *,
    precision: Precision = "fp32",
) -> Tensor:
    """Per-gene residual scale on (reference) cells: ``sqrt(mean_i delta_ig^2) + 0.1 rms(delta)``.

    Dividing residuals by it stops a few highly expressed, noisy genes from dominating
    the residual norm; the floor keeps genes the generator reconstructs perfectly from
    blowing up. In a distributed run each rank passes its shard and the sums are
    all-reduced (every rank needs at least one cell).
    """
    sum_sq, n_cells = None, 0
    for chunk in reconstruct(generator, loader, precision=precision):
        sq = (chunk.x - chunk.x_hat).double().pow(2).sum(0)
        sum_sq = sq if sum_sq is None else sum_sq + sq
        n_cells += chunk.x.shape[0]
    ctx = parallel.context()
    sum_sq = parallel.all_reduce_sum(sum_sq, ctx)
    n_cells = parallel.all_reduce_sum(torch.tensor([float(n_cells)], device=sum_sq.device), ctx)
    mean_sq = sum_sq / n_cells
    return (mean_sq.sqrt() + 0.1 * mean_sq.mean().sqrt()).float()


@torch.inference_mode()
def chunk_scores(
    generator: Generator, critic: Critic, chunk: Reconstruction, scale: Tensor
) -> dict[str, Tensor]:
    """The per-cell scores that need only the chunk (docs/method.md §1, plus the scaled residual)."""
    delta = chunk.x - chunk.x_hat
    return {
        "residual": delta.norm(dim=1),
        "scaled": (delta / scale).norm(dim=1),
        "cosine": 1.0 - F.cosine_similarity(chunk.z, generator.encoder(chunk.x_hat), dim=1),
        "critic": (critic(chunk.x) - critic(chunk.x_hat)).norm(dim=1),
    }
