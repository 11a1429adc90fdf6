"""Stage III: style transfer of target cells into the reference's space (docs/method.md §3)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import Tensor, nn

from .. import parallel
from .._anndata import batch_codes
from .._constants import (
    ANOMALY_EXPRESSIONS,
    BATCH_SIZE,
    EVAL_BATCH_SIZE,
    KINS,
    RECONSTRUCTION_WEIGHT,
    STYLE_N_CRITIC,
    AnomalyExpression,
    Kin,
    Params,
)
from .._logging import stage_timer
from .._seed import seeded
from ..data import ExpressionSource, MinibatchLoader, prepare
from ..nn import Critic, Decoder, Encoder, Generator
from ..nn.generator import EMBEDDING
from ..train import AdversarialConfig, AdversarialStep, Checkpoint, train_adversarial
from .batch_scale import batch_names, batch_scale_or_none, scale_rows
from .kin import find_kin
from .neighbours import ReferenceNeighbours


@dataclass(frozen=True)
class StyleConfig(AdversarialConfig):
    """Module III training settings (docs/method.md §3 defaults)."""

    epochs: int = 50
    critic_steps: int = STYLE_N_CRITIC
    batch_size: int = BATCH_SIZE
    reconstruction_weight: float = RECONSTRUCTION_WEIGHT


class StyleTransfer(nn.Module):
    """``(x, batch) -> D(E(x) - S[batch])``: ``(B, G)`` and ``(B,)`` batch codes to ``(B, G)``.

    Encoder and decoder are module I's (no memory); the style matrix ``S (n_batches, p)``
    starts uniform in ``±1/sqrt(p)``.

    Parameters
    ----------
    n_genes, n_batches
        Genes of the panel and number of target batches (rows of ``S``).
    init
        A trained module I generator whose encoder and decoder weights are copied.
    """

    def __init__(self, n_genes: int, n_batches: int, *, init: Generator | None = None) -> None:
        super().__init__()
        if n_batches < 1:
            raise ValueError(f"StyleTransfer needs n_batches >= 1, got {n_batches}")
        self.encoder = Encoder(n_genes)
        self.decoder = Decoder(n_genes)
        bound = 1.0 / math.sqrt(EMBEDDING)
        self.style = nn.Parameter(torch.empty(n_batches, EMBEDDING).uniform_(-bound, bound))
        if init is not None:
            self.encoder.load_state_dict(init.encoder.state_dict())
            self.decoder.load_state_dict(init.decoder.state_dict())

    def forward(self, x: Tensor, batch: Tensor) -> Tensor:
        return self.decoder(self.encoder(x) - self.style[batch])


def _batch_codes(
    batch_codes: np.ndarray, n_obs: int, n_styles: int, device: torch.device
) -> Tensor:
    """Validated ``(n_obs,)`` int64 codes in ``[0, n_styles)`` as a tensor on ``device``."""
    codes = np.asarray(batch_codes)
    if codes.shape != (n_obs,) or (codes.size and codes.dtype.kind not in "iu"):
        raise ValueError(
            f"batch_codes must be {n_obs} integers (one per target cell), got shape "
            f"{codes.shape} of dtype {codes.dtype}"
        )
    if codes.size and (codes.min() < 0 or codes.max() >= n_styles):
        raise ValueError(
            f"batch_codes must lie in [0, {n_styles}) (the generator has {n_styles} style "
            f"rows), got [{codes.min()}, {codes.max()}]"
        )
    return torch.as_tensor(codes, dtype=torch.long).to(device)


def _kin_pairs(
    normal_rows: np.ndarray, kin_rows: np.ndarray, n_target: int, n_reference: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(n,)`` int64 target rows (distinct, ``n >= 2``) and their kin rows."""
    normal_rows, kin_rows = np.asarray(normal_rows), np.asarray(kin_rows)
    if normal_rows.ndim != 1 or normal_rows.shape != kin_rows.shape:
        raise ValueError(
            f"train_style: normal_rows {normal_rows.shape} and kin_rows {kin_rows.shape} must "
            "be 1-D arrays of the same length (one kin per normal cell)"
        )
    for name, rows, n in (
        ("normal_rows", normal_rows, n_target),
        ("kin_rows", kin_rows, n_reference),
    ):
        if rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"train_style: {name} must be integer positions in [0, {n})")
    n_distinct = np.unique(normal_rows).size
    if n_distinct < 2 or n_distinct != normal_rows.size:
        raise ValueError(
            f"train_style: needs at least 2 distinct normal target cells (BatchNorm), got "
            f"{normal_rows.size} rows of which {n_distinct} are distinct"
        )
    return normal_rows.astype(np.int64, copy=False), kin_rows.astype(np.int64, copy=False)


def train_style(
    generator: StyleTransfer,
    target: ExpressionSource,
    normal_rows: np.ndarray,
    kin_rows: np.ndarray,
    reference: ExpressionSource,
    batch_codes: np.ndarray,
    *,
    config: StyleConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    verbose: bool = True,
    checkpoint: Checkpoint | None = None,
) -> list[dict[str, float]]:
    """Train ``generator`` to turn target normal cells into their kin reference cells.

    Generator loss ``alpha E|x_kin - x_hat|_1 - beta E[C_3(x_hat)]``, WGAN-GP critic on
    ``(x_kin, x_hat)``, through :func:`~acsleuth.train.train_adversarial`. Minibatches of
    normal cells are shuffled with ``seed``; the critic's weights and dropout use the global
    torch RNG, as in the other stages. ``checkpoint`` resumes and checkpoints the training
    (stage ``"style"``). Leaves ``generator`` on ``device`` in eval mode.

    Parameters
    ----------
    target, reference
        Sources on the same gene panel.
    normal_rows
        ``(n,)`` distinct target rows of the cells called normal.
    kin_rows
        ``(n,)`` the reference row of each normal cell's kin (stage II).
    batch_codes
        ``(target.n_obs,)`` integer batch of every target cell, in ``[0, n_batches)``.

    Returns
    -------
    Per-epoch means of the ``critic``, ``gp``, ``generator`` and ``own`` losses.
    """
    config = config or StyleConfig()
    device = torch.device(device)
    if target.genes != reference.genes:
        raise ValueError(
            "train_style: target and reference are on different gene panels; prepare the "
            "target with genes=reference.genes"
        )
    normal_rows, kin_rows = _kin_pairs(normal_rows, kin_rows, target.n_obs, reference.n_obs)
    codes = _batch_codes(batch_codes, target.n_obs, generator.style.shape[0], device)
    cells = MinibatchLoader(
        target,
        batch_size=min(config.batch_size, normal_rows.size),
        shuffle=True,
        drop_last=True,
        seed=seed,
        device=device,
        rows=normal_rows,
    )
    kin_cells = MinibatchLoader(reference, device=device)
    kin_of = np.zeros(target.n_obs, dtype=np.int64)
    kin_of[normal_rows] = kin_rows

    def batches() -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for rows, x in cells:
            yield x, codes[torch.from_numpy(rows).to(device)], kin_cells.take(kin_of[rows])

    def step(batch: tuple[Tensor, Tensor, Tensor]) -> AdversarialStep:
        x, code, x_kin = batch
        x_hat = generator(x, code)
        return AdversarialStep(
            x_kin, x_hat, config.reconstruction_weight * F.l1_loss(x_hat.float(), x_kin)
        )

    generator.to(device).train()
    critic = Critic(target.n_genes).to(device).train()
    history = train_adversarial(
        list(generator.parameters()),
        critic,
        batches,
        step,
        config,
        desc="style",
        verbose=verbose,
        state={"generator": generator, "loader": cells},
        checkpoint=checkpoint,
    )
    generator.eval()
    return history


def apply_style(
    generator: StyleTransfer,
    target: ExpressionSource,
    batch_codes: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    chunk: int = EVAL_BATCH_SIZE,
    rows: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, Tensor, Tensor]]:
    """Batch-corrected expression of every target cell (of ``rows`` when given), normal or
    anomalous, in order.

    Moves ``generator`` to ``device`` in eval mode and checks ``batch_codes`` (one per
    target cell) before the first chunk.

    Yields
    ------
    rows, x, corrected
        ``(b,)`` int64 target rows, their float32 ``(b, G)`` input ``x`` and output
        ``D(E(x) - S[batch])``, both on ``device``.
    """
    device = torch.device(device)
    codes = _batch_codes(batch_codes, target.n_obs, generator.style.shape[0], device)
    generator.to(device).eval()  # outside inference mode: moved weights stay trainable
    return _corrected(
        generator,
        MinibatchLoader(target, batch_size=chunk, device=device, resident_bytes=0, rows=rows),
        codes,
    )


@torch.inference_mode()
def _corrected(
    generator: StyleTransfer, loader: MinibatchLoader, codes: Tensor
) -> Iterator[tuple[np.ndarray, Tensor, Tensor]]:
    for rows, x in loader:
        yield rows, x, generator(x, codes[torch.from_numpy(rows).to(codes.device)])


def fit_style(
    init: Generator,
    target: ExpressionSource,
    reference: ExpressionSource,
    normal_rows: np.ndarray,
    kin_rows: np.ndarray,
    codes: np.ndarray,
    n_batches: int,
    params: Params,
    *,
    device: torch.device,
    checkpoint: Checkpoint | None = None,
) -> tuple[StyleTransfer, list[dict[str, float]]]:
    """A style transfer started from module I's ``init``, trained on this rank's
    ``normal_rows`` and their kin (every rank's model alike after training), and its
    per-epoch losses (:func:`train_style`)."""
    ctx = parallel.context()
    style = StyleTransfer(target.n_genes, n_batches, init=init)
    history = train_style(
        style,
        target,
        normal_rows,
        kin_rows,
        reference,
        codes,
        config=params.style_config(ctx.world_size),
        device=device,
        seed=params.random_state + ctx.rank,
        verbose=params.verbose and ctx.is_main,
        checkpoint=checkpoint,
    )
    parallel.average_buffers(style, ctx)
    return style, history


def correct_cells(
    style: StyleTransfer,
    target: ExpressionSource,
    normal: np.ndarray,
    codes: np.ndarray,
    n_batches: int,
    params: Params,
    *,
    device: torch.device,
    anomalies: AnomalyExpression = "shift",
    out: Any = None,
) -> Any:
    """Fill ``out`` (a new array when None; rank 0 only, None elsewhere) with the corrected
    expression of every target cell, each rank correcting its shard of cells.

    Normal cells get the style transfer's output. With ``anomalies="shift"`` anomalous
    cells get their own expression plus their batch's mean correction (output minus input
    over its normal cells); with ``"generator"`` the output too (docs/method.md §3).
    """
    ctx = parallel.context()
    n_genes = target.n_genes
    first, last = parallel.shard_bounds(target.n_obs, ctx)  # all cells in one process
    corrected = None
    if ctx.is_main:
        corrected = np.empty((target.n_obs, n_genes), dtype=np.float32) if out is None else out
    shift = torch.zeros((n_batches, n_genes), dtype=torch.float64, device=device)
    chunks = apply_style(
        style,
        target,
        codes,
        device=device,
        chunk=params.eval_batch_size,
        rows=np.arange(first, last),
    )
    nothing = torch.zeros((0, n_genes))
    for rows, x, styled in parallel.lockstep_padded(
        chunks, ctx, (np.zeros(0, dtype=np.int64), nothing, nothing)
    ):
        x, styled = x.cpu().numpy(), styled.cpu().numpy()
        if anomalies == "shift":
            kept, chunk_codes = normal[rows], codes[rows]
            delta = torch.from_numpy(styled[kept] - x[kept]).to(shift)
            index = torch.from_numpy(chunk_codes[kept]).to(device)
            shift.index_add_(0, index, delta)
            styled[~kept] = x[~kept]  # the batch's mean correction is added below
        rows, styled = parallel.gather_to_main(rows, ctx), parallel.gather_to_main(styled, ctx)
        if corrected is not None:  # one run of rows per rank
            for run in np.split(np.arange(rows.size), np.flatnonzero(np.diff(rows) != 1) + 1):
                if run.size:
                    corrected[int(rows[run[0]]) : int(rows[run[-1]]) + 1] = styled[run]
    if anomalies == "shift":
        shift = parallel.all_reduce_sum(shift, ctx).cpu().numpy()
        shift /= np.maximum(np.bincount(codes[normal], minlength=n_batches), 1)[:, None]
        anomalous = np.flatnonzero(~normal) if corrected is not None else []
        for i in range(0, len(anomalous), params.eval_batch_size):
            rows = anomalous[i : i + params.eval_batch_size]
            corrected[rows] = corrected[rows] + shift[codes[rows]].astype(np.float32)
    return corrected


def correct_expression(
    generator: Generator,
    target: AnnData | str | os.PathLike,
    reference: AnnData | str | os.PathLike,
    normal: np.ndarray,
    genes: list[str],
    params: Params,
    *,
    batch_key: str | None,
    kin: Kin,
    anomalies: AnomalyExpression,
    out: Any,
    device: torch.device,
    timings: dict[str, float],
    checkpoint: Checkpoint | None = None,
    layer: str | None = None,
    history: dict[str, list[dict[str, float]]] | None = None,
    neighbours: ReferenceNeighbours | None = None,
    batch_scale: pd.DataFrame | np.ndarray | None = None,
) -> Any:
    """Modules II-III with module I's ``generator``: match the ``normal`` target cells to
    reference kin, train the style transfer on them and correct every target cell on the
    panel ``genes`` (see :meth:`acsleuth.ACsleuth.correct`, which documents the arguments;
    ``layer``: read ``layers[layer]`` of both inputs instead of ``X``).
    Seconds go to ``timings["kin"]`` and ``timings["style"]``; the style transfer's per-epoch
    losses to ``history["style"]`` when given. With a ``batch_key``, ``params.batch_scale``
    and the reference ``neighbours`` (with their profile), each batch's per-gene scale is
    divided out of the target first, as scoring divides it out of what the distance measures
    (:func:`~acsleuth.stages.batch_scale.target_batch_scale`: the same seeded estimate);
    ``batch_scale`` (scoring's ``ScoreResult.batch_scale``, rows matched to the batches by
    name; or a ``(batches, G)`` array in the order of their codes) is used instead of
    estimating it again when given (with a ``batch_key``; ignored without one)."""
    if kin not in KINS:
        raise ValueError(f"ACsleuth: kin must be 'nearest' or 'learned', got {kin!r}")
    if anomalies not in ANOMALY_EXPRESSIONS:
        raise ValueError(f"ACsleuth: anomalies must be 'shift' or 'generator', got {anomalies!r}")
    target_source = prepare(target, genes=genes, name="target", layer=layer)
    reference_source = prepare(reference, genes=genes, name="reference", layer=layer)
    normal = np.asarray(normal, dtype=bool)
    if normal.shape != (target_source.n_obs,):
        raise ValueError(f"normal must be {target_source.n_obs} booleans, got shape {normal.shape}")
    if normal.sum() < 2:  # kin search and the style transfer learn from the normal cells
        raise ValueError(
            f"correct: {int(normal.sum())} of {normal.size} target cells are called normal, and batch "
            "correction learns from normal cells (at least 2); pass anomaly_ratio= to call fewer "
            "anomalies, or skip correction (correct=False, --no-correct)"
        )
    shape = (target_source.n_obs, len(genes))
    if out is not None and tuple(out.shape) != shape:
        raise ValueError(
            f"correct: out has shape {tuple(out.shape)}, expected {shape} (cells x model genes)"
        )
    codes, n_batches = batch_codes(target_source.adata, batch_key)
    if batch_key is None:
        batch_scale = None  # one batch: nothing to divide out (as scoring does)
    elif batch_scale is None:
        batch_scale = batch_scale_or_none(
            neighbours, target_source, codes, params, device, batch_key=batch_key, timings=timings
        )
    else:
        batch_scale = scale_rows(batch_scale, batch_names(target_source.adata, batch_key), genes)
    if batch_scale is not None:
        target_source = target_source.with_batch_scale(batch_scale, codes)
    ctx = parallel.context()
    first, last = parallel.shard_bounds(target_source.n_obs, ctx)  # all cells in one process
    normal_rows = np.flatnonzero(normal)
    mine = normal_rows[(normal_rows >= first) & (normal_rows < last)]
    with seeded(params.random_state, device):
        with stage_timer(timings, "kin"):
            kin_rows = find_kin(
                generator, target_source, reference_source, mine, kin, params, device
            )
        with stage_timer(timings, "style"):
            style, losses = fit_style(
                generator,
                target_source,
                reference_source,
                mine,
                kin_rows,
                codes,
                n_batches,
                params,
                device=device,
                checkpoint=checkpoint,
            )
            if history is not None:
                history["style"] = losses
            return correct_cells(
                style,
                target_source,
                normal,
                codes,
                n_batches,
                params,
                device=device,
                anomalies=anomalies,
                out=out,
            )
