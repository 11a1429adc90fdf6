"""The user-facing model: ``ACsleuth(...).fit(reference)``, then score / predict target cells."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from . import parallel, tl
from ._atomic import atomic_dir
from ._logging import logger, stage_timer
from ._precision import PRECISIONS, Precision, autocast
from .data import ExpressionSource, MinibatchLoader, highly_variable_genes, prepare
from .data.store import RowStore
from .nn import Critic, Generator
from .nn.generator import EMBEDDING
from .stages.detect import (
    DetectorConfig,
    chunk_scores,
    reconstruct,
    residual_scale,
    train_detector,
)
from .stages.kin import KinConfig, learned_kin, nearest_kin
from .stages.mmd import ScorerConfig, fit_predictor, predict_logits
from .stages.residuals import ScaledResiduals, batch_medians, median_sample
from .stages.style import StyleConfig, StyleTransfer, apply_style, train_style
from .stages.subtype import SubtypeConfig, SubtypeResult, check_n_subtypes, subtype_anomalies
from .train import Checkpoint

Score = Literal["mmd", "scaled", "residual", "cosine", "critic"]
SCORES: tuple[Score, ...] = ("mmd", "scaled", "residual", "cosine", "critic")
N_ANCHORS = 2048
RESIDUAL_DTYPE = torch.float16  # the predictor's input cache: half the memory, ~1e-3 relative error
DEFAULT_CACHE_BYTES = 2 << 30  # cache_gb=None on CPU
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"


@dataclass
class ScoreResult:
    """Everything one scoring pass produces for a target (one row per target cell)."""

    scores: dict[str, np.ndarray]
    score: np.ndarray
    anomaly: np.ndarray
    embedding: np.ndarray | None  # None on ranks other than 0 of a distributed run
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if str(device) == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    ctx = parallel.context()
    if device.type == "cuda" and ctx.distributed:  # one GPU per torchrun process
        return torch.device("cuda", ctx.local_rank)
    return device


class ACsleuth:
    """Anomalous-cell detection with ACsleuth (SPEC §1): fit on normal reference cells, score targets.

    Parameters
    ----------
    n_top_genes
        Highly variable genes chosen on the reference (all genes when there are fewer).
    prepare_epochs, train_epochs
        Epochs of module I without, then with, the memory bank.
    score_epochs
        MMD epochs of the predictor (``score="mmd"``), after its ``warm_epochs``; 5 scored
        best on the evaluation suite (20 over-fits the MMD's own bipartition).
    batch_size
        Training minibatch size.
    score
        ``"mmd"`` (the gamma_c predictor on scaled residuals), ``"scaled"`` (``||(x - x_hat) /
        s||`` with ``s`` the reference's per-gene residual scale), ``"residual"``
        (``||x - x_hat||``), ``"cosine"`` (``1 - cos(E(x), E(x_hat))``) or ``"critic"``
        (``||C(x) - C(x_hat)||``).
    kernel, gamma
        Kernel and weight function of the MMD predictor (SPEC §1.1).
    anomaly_ratio
        Expected fraction of anomalies: the top ``ratio * N`` cells are called anomalous.
        ``None``: the cells in the top component of a Gaussian mixture on the scores (three
        components on the ``"mmd"`` logits, two on ``log1p`` of the other scores). The MMD
        predictor always uses soft group sizes (measured better).
    score_batch_size, warm_epochs, anchor
        Minibatch size of the MMD predictor (``None``: one full pass per epoch), the epochs
        it first spends learning the scaled-residual ranking, and whether reference
        residuals join its minibatches as known normal cells.
    n_memory, memory_temperature, memory_shrink
        The memory bank's size, softmax temperature and hard-shrinkage threshold (SPEC §1).
    n_critic, style_n_critic
        Critic updates per generator update in module I and in the style transfer.
    reconstruction_weight, adversarial_weight, gp_weight
        alpha, beta and lambda of the WGAN-GP losses of modules I and III (SPEC §1, §3).
    kin_epochs, style_epochs, subtype_epochs
        Epochs of the learned kin mapping (module II, ``kin="learned"``), of the style
        transfer (module III) and the most epochs of DESC (module IV), used by :meth:`run`.
    subtype_embedding
        What DESC clusters (module IV): ``"pca"``, principal components of the anomalies'
        expression (default: the higher F1 x NMI on the two-batch PBMC evaluation), or
        ``"fusion"``, the SPEC's transformer fusion of ``E(x)`` and ``E(x - x_hat)``.
    cache_gb
        Largest cache held in memory (on the GPU when the device is CUDA): the dense
        training data, the target's float16 scaled residuals, its embeddings. Larger
        ones are streamed from the input or from a temporary file. None: 2 GB on CPU,
        half the free GPU memory on CUDA.
    precision
        ``"fp32"``, or ``"bf16"``: the GANs' forward passes (training, reconstruction,
        embedding) run under bf16 autocast (faster on GPUs with bf16 tensor cores); the
        fused ops, losses and scores stay float32.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    random_state
        Seed of every random choice (weights, minibatches, dropout).
    verbose
        Progress bars and per-stage log lines.
    """

    def __init__(
        self,
        *,
        n_top_genes: int = 3000,
        prepare_epochs: int = 50,
        train_epochs: int = 20,
        score_epochs: int = 5,
        batch_size: int = 128,
        score: Score = "mmd",
        kernel: Literal["linear", "gaussian"] = "gaussian",
        gamma: Literal["interp", "reference"] = "interp",
        anomaly_ratio: float | None = None,
        score_batch_size: int | None = 128,
        warm_epochs: int = 10,
        anchor: bool = True,
        n_memory: int = 512,
        memory_temperature: float = 0.05,
        memory_shrink: float = 0.01,
        n_critic: int = 2,
        style_n_critic: int = 3,
        reconstruction_weight: float = 30.0,
        adversarial_weight: float = 1.0,
        gp_weight: float = 10.0,
        learning_rate: float = 1e-4,
        eval_batch_size: int = 4096,
        kin_epochs: int = 20,
        style_epochs: int = 50,
        subtype_epochs: int = 100,
        subtype_embedding: Literal["pca", "fusion"] = "pca",
        cache_gb: float | None = None,
        precision: Precision = "fp32",
        device: str = "auto",
        random_state: int = 2024,
        verbose: bool = True,
    ) -> None:
        self.params: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._check_params()
        self.device = resolve_device(device)
        self.genes_: list[str] | None = None
        self.generator_: Generator | None = None
        self.critic_: Critic | None = None
        self.residual_scale_: torch.Tensor | None = None
        self.anchors_: torch.Tensor | None = None
        self.history_: dict[str, list[dict[str, float]]] = {}
        self.timings_: dict[str, float] = {}

    def _check_params(self) -> None:
        p = self.params
        for name in ("n_top_genes", "batch_size", "n_memory", "eval_batch_size", "n_critic", "style_n_critic"):
            if int(p[name]) < 1:
                raise ValueError(f"ACsleuth: {name} must be a positive integer, got {p[name]}")
        for name in (
            "prepare_epochs", "train_epochs", "score_epochs", "warm_epochs", "kin_epochs",
            "style_epochs", "subtype_epochs",
        ):
            if int(p[name]) < 0:
                raise ValueError(f"ACsleuth: {name} must be >= 0, got {p[name]}")
        if p["score"] not in SCORES:
            raise ValueError(f"ACsleuth: score must be one of {SCORES}, got {p['score']!r}")
        if p["kernel"] not in ("linear", "gaussian"):
            raise ValueError(f"ACsleuth: kernel must be 'linear' or 'gaussian', got {p['kernel']!r}")
        if p["gamma"] not in ("interp", "reference"):
            raise ValueError(f"ACsleuth: gamma must be 'interp' or 'reference', got {p['gamma']!r}")
        ratio = p["anomaly_ratio"]
        number = isinstance(ratio, int | float | np.integer | np.floating)
        if ratio is not None and not (number and 0.0 < float(ratio) < 1.0):
            raise ValueError(
                f"ACsleuth: anomaly_ratio must be in (0, 1) or None (estimate), got {ratio} "
                "(pass the expected fraction of anomalous cells, e.g. 0.1, or leave it out)"
            )
        if p["subtype_embedding"] not in ("pca", "fusion"):
            raise ValueError(
                f"ACsleuth: subtype_embedding must be 'pca' or 'fusion', got {p['subtype_embedding']!r}"
            )
        if p["cache_gb"] is not None and not float(p["cache_gb"]) >= 0:
            raise ValueError(f"ACsleuth: cache_gb must be >= 0 or None (automatic), got {p['cache_gb']}")
        if p["precision"] not in PRECISIONS:
            raise ValueError(f"ACsleuth: precision must be one of {PRECISIONS}, got {p['precision']!r}")
        for name in ("learning_rate", "memory_temperature"):
            if not float(p[name]) > 0:
                raise ValueError(f"ACsleuth: {name} must be > 0, got {p[name]}")
        for name in ("memory_shrink", "reconstruction_weight", "adversarial_weight", "gp_weight"):
            if not float(p[name]) >= 0:
                raise ValueError(f"ACsleuth: {name} must be >= 0, got {p[name]}")

    def _cache_bytes(self) -> int:
        """The ``cache_gb`` budget in bytes (see the class docstring for the default)."""
        if self.params["cache_gb"] is not None:
            return int(float(self.params["cache_gb"]) * 2**30)
        if self.device.type == "cuda":
            return torch.cuda.mem_get_info(self.device)[0] // 2
        return DEFAULT_CACHE_BYTES

    # ------------------------------------------------------------------ training
    @property
    def is_fitted(self) -> bool:
        return self.generator_ is not None

    def _detector_config(self) -> DetectorConfig:
        p = self.params
        return DetectorConfig(
            prepare_epochs=p["prepare_epochs"], train_epochs=p["train_epochs"], lr=p["learning_rate"],
            critic_steps=p["n_critic"], reconstruction_weight=p["reconstruction_weight"],
            adversarial_weight=p["adversarial_weight"], gp_weight=p["gp_weight"], precision=p["precision"],
        )

    def _new_generator(self, n_genes: int) -> Generator:
        p = self.params
        return Generator(
            n_genes, n_memory=p["n_memory"], temperature=p["memory_temperature"], shrink=p["memory_shrink"]
        ).to(self.device)

    def _scorer_config(self) -> ScorerConfig:
        p = self.params
        return ScorerConfig(
            epochs=p["score_epochs"], kernel=p["kernel"], gamma=p["gamma"],
            batch_size=p["score_batch_size"], warm_epochs=p["warm_epochs"], lr=p["learning_rate"],
        )

    def fit(self, reference: AnnData | str | os.PathLike, *, checkpoint: Checkpoint | None = None) -> ACsleuth:
        """Train module I on ``reference`` (normal cells only; AnnData, backed AnnData or a path).

        With a :class:`~acsleuth.train.Checkpoint` the training state is written every
        ``checkpoint.every`` epochs and on Ctrl-C, an interrupted fit is continued (to the
        same weights on the CPU), and the fitted model is written into the checkpoint too;
        resuming a checkpoint that holds it reads it instead of training.
        """
        if checkpoint is not None:
            checkpoint.bind(self._fingerprint(reference=reference))
            if checkpoint.has_model():
                logger.info("resumed: the fitted model is read from %s", checkpoint.model_dir)
                return self._load_fitted(checkpoint.model_dir)
        timings: dict[str, float] = {}
        p = self.params
        with stage_timer(timings, "prepare data"):
            source = prepare(reference, name="reference")
            genes = highly_variable_genes(source, p["n_top_genes"], seed=p["random_state"])
            source = source.with_genes(genes)
        ctx = parallel.context()
        if source.n_obs < 2 * ctx.world_size:
            raise ValueError(
                f"reference: {source.n_obs} cell(s); module I needs at least 2 normal cells "
                f"(BatchNorm statistics) per process ({ctx.world_size} processes)"
            )
        rows = parallel.shard_rows(source.n_obs, ctx)  # all cells in a single process
        with self._seeded():
            generator = self._new_generator(len(genes))
            critic = Critic(len(genes)).to(self.device)
            parallel.broadcast_module(generator, ctx)
            loader = MinibatchLoader(
                source, batch_size=min(max(2, p["batch_size"] // ctx.world_size), rows.size),
                shuffle=True, drop_last=True, seed=p["random_state"] + ctx.rank, device=self.device,
                resident_bytes=self._cache_bytes(), rows=rows,
            )
            with stage_timer(timings, "module I"):
                history = train_detector(
                    generator, critic, loader, self._detector_config(), verbose=p["verbose"] and ctx.is_main,
                    timings=timings, checkpoint=checkpoint,
                )
                parallel.average_buffers(generator, ctx)
            with stage_timer(timings, "reference residuals"):
                scale, anchors = self._reference_residuals(source, generator)
        self.genes_, self.generator_, self.critic_ = genes, generator, critic
        self.residual_scale_, self.anchors_ = scale, anchors
        self.history_, self.timings_ = history, timings
        logger.info("fitted module I on %d reference cells x %d genes", source.n_obs, len(genes))
        if checkpoint is not None:
            self.save(checkpoint.model_dir, overwrite=True)
        return self

    def _fingerprint(self, **inputs: AnnData | str | os.PathLike | None) -> dict[str, Any]:
        """What makes two runs the same run, for :meth:`Checkpoint.bind`: the settings that
        change results, and each input's shape (and file, when read from one)."""
        fingerprint = {k: v for k, v in self.params.items() if k not in ("device", "verbose")}
        for name, data in inputs.items():
            if isinstance(data, AnnData):
                where = f" in {Path(data.filename).resolve()}" if data.isbacked else ""
                fingerprint[name] = f"{data.n_obs} cells x {data.n_vars} genes{where}"
            elif data is not None:
                fingerprint[name] = str(Path(data).resolve())
        return fingerprint

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        """Seed torch's global RNG with ``random_state`` inside, restore it outside."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.params["random_state"])
            yield

    def _reference_residuals(
        self, source: ExpressionSource, generator: Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-gene residual scale of the reference, and scaled residuals of up to 2048 of its cells."""
        loader = MinibatchLoader(
            source, batch_size=self.params["eval_batch_size"], device=self.device, resident_bytes=0,
            rows=parallel.shard_rows(source.n_obs, parallel.context()),
        )
        scale = residual_scale(generator, loader, precision=self.params["precision"])
        rng = np.random.default_rng(self.params["random_state"])
        rows = np.sort(rng.choice(source.n_obs, min(N_ANCHORS, source.n_obs), replace=False))
        x = torch.as_tensor(source.rows(rows), device=self.device)
        with torch.inference_mode(), autocast(self.device, self.params["precision"]):
            x_hat, _ = generator(x, use_memory=True)
        return scale, ((x - x_hat.float()) / scale).clone()

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("ACsleuth: call fit(reference) (or ACsleuth.load(dir)) before scoring")

    def evaluate(
        self,
        target: AnnData | str | os.PathLike,
        *,
        score: Score | None = None,
        batch_key: str | None = None,
    ) -> ScoreResult:
        """Score every target cell and call anomalies; returns every score type computed.

        With ``batch_key`` (an ``obs`` column of target batches) the scaled residuals behind
        the ``"scaled"`` and ``"mmd"`` scores are centred per batch on their per-gene median
        (over up to 20,000 cells per batch), so that a batch measured unlike the reference is
        not called anomalous as a whole.

        Target cells are read, reconstructed and scored in chunks of ``eval_batch_size``;
        the scaled residuals the MMD predictor trains on are kept once, in float16, in
        memory when they fit ``cache_gb`` and in a temporary file otherwise, so memory
        grows only with the per-cell outputs.
        """
        self._require_fitted()
        p = self.params
        score = score or p["score"]
        if score not in SCORES:
            raise ValueError(f"ACsleuth: score must be one of {SCORES}, got {score!r}")
        timings: dict[str, float] = {}
        with stage_timer(timings, "prepare target"):
            source = prepare(target, genes=self.genes_, name="target")
        if score == "mmd" and source.n_obs < 4:
            raise ValueError(
                f"target: {source.n_obs} cell(s); the MMD score compares groups of target cells "
                "and needs at least 4 target cells (score more cells together, or use "
                "score='scaled', which scores each cell on its own)"
            )
        by_batch = batch_key is not None
        codes, _ = batch_codes(source.adata, batch_key)
        with self._seeded():
            with stage_timer(timings, "reconstruct"):
                scores, residuals, embedding = self.reconstruct(
                    source, keep_residuals=score == "mmd" or by_batch,
                    codes=codes if by_batch else None,
                )
            try:
                if by_batch:
                    with stage_timer(timings, "batch centring"):
                        scores["scaled"] = residuals.norms().cpu()
                if score == "mmd":
                    with stage_timer(timings, "mmd score"):
                        scores["mmd"] = self._mmd_scores(residuals, scores["scaled"], timings=timings)
            finally:
                if residuals is not None:
                    residuals.store.close()
        ctx = parallel.context()
        if ctx.distributed:  # every rank calls the same cells; rank 0 keeps the embeddings
            scores = {k: parallel.all_gather_rows(v.to(self.device), ctx).cpu() for k, v in scores.items()}
            embedding = parallel.gather_to_main(embedding, ctx)
        chosen = scores[score]
        anomaly, threshold = self._call(chosen, score)
        return ScoreResult(
            scores={k: v.numpy().astype(np.float64) for k, v in scores.items()},
            score=chosen.numpy().astype(np.float64), anomaly=anomaly,
            embedding=embedding, threshold=threshold, timings=timings,
        )

    def reconstruct(
        self,
        source: ExpressionSource,
        *,
        keep_residuals: bool = False,
        codes: np.ndarray | None = None,
    ) -> tuple[dict[str, torch.Tensor], ScaledResiduals | None, np.ndarray]:
        """One streamed pass over ``source``: per-cell scores that need no training, the scaled
        residuals (when ``keep_residuals``; float16, centred per batch of ``codes`` when given)
        and the ``(n_obs, 256)`` encoder embeddings.

        In a distributed run each rank passes over its contiguous shard of cells (see
        :func:`acsleuth.parallel.shard_bounds`) and returns that shard's rows; batch centres
        are computed from all ranks' samples."""
        self._require_fitted()
        ctx = parallel.context()
        n_genes = source.n_genes
        if source.n_obs < ctx.world_size:
            raise ValueError(f"target: {source.n_obs} cell(s) for {ctx.world_size} processes; use fewer")
        first, last = parallel.shard_bounds(source.n_obs, ctx)  # all cells in a single process
        n_obs = last - first
        budget = self._cache_bytes()
        loader = MinibatchLoader(
            source, batch_size=self.params["eval_batch_size"], device=self.device, resident_bytes=0,
            rows=np.arange(first, last),
        )
        store = None
        if keep_residuals:
            store = RowStore(n_obs, n_genes, device=self.device, dtype=RESIDUAL_DTYPE, budget_bytes=budget)
        sample = None if codes is None else median_sample(codes, seed=self.params["random_state"])
        # Every output is allocated once and filled in place: small per-chunk tensors kept
        # alive between the chunks' large transient buffers fragment the heap, which then
        # grew by ~14 kB per cell (measured: 18 GB peak for 1M cells x 2,000 genes).
        on_device = n_obs * EMBEDDING * 4 <= budget
        out_device = self.device if on_device else torch.device("cpu")
        embedding = torch.empty((n_obs, EMBEDDING), device=out_device)
        scores: dict[str, torch.Tensor] = {}
        picked = None
        if sample is not None and store is not None:
            mine = sample[(sample >= first) & (sample < last)]
            picked = torch.empty((mine.size, n_genes), dtype=RESIDUAL_DTYPE, device=self.device)
        for chunk in reconstruct(self.generator_, loader, precision=self.params["precision"]):
            start, stop = int(chunk.rows[0]), int(chunk.rows[-1]) + 1
            for name, value in chunk_scores(self.generator_, self.critic_, chunk, self.residual_scale_).items():
                if name not in scores:
                    scores[name] = torch.empty(n_obs, device=out_device)
                scores[name][start - first:stop - first].copy_(value)
            if store is not None:
                scaled = ((chunk.x - chunk.x_hat) / self.residual_scale_).to(RESIDUAL_DTYPE)
                store.write(start - first, scaled)
                if picked is not None:
                    lo, hi = np.searchsorted(mine, [start, stop])
                    index = torch.from_numpy(mine[lo:hi] - start).to(scaled.device)
                    picked[lo:hi].copy_(scaled[index])
            embedding[start - first:stop - first].copy_(chunk.z)
        scores = {name: values.cpu() for name, values in scores.items()}
        residuals = None
        if store is not None:
            residuals = ScaledResiduals(store)
            if picked is not None:  # every rank gets the same centres from all ranks' samples
                codes_t = torch.as_tensor(codes, dtype=torch.long, device=self.device)
                sampled = parallel.all_gather_rows(picked, ctx)
                centre = batch_medians(
                    sampled, codes_t[torch.from_numpy(sample).to(self.device)], int(codes.max()) + 1
                )
                residuals = ScaledResiduals(store, centre, codes_t[first:last])
        return scores, residuals, embedding.cpu().numpy()

    @torch.inference_mode()
    def embed(self, source: ExpressionSource, rows: np.ndarray | None = None) -> torch.Tensor:
        """Module I encoder embeddings ``(n, 256)`` of ``rows`` (all cells when None), in chunks.

        Only the encoder runs: cheaper than :meth:`reconstruct` when no score is needed.
        """
        self._require_fitted()
        encoder = self.generator_.encoder.eval()
        loader = MinibatchLoader(
            source, batch_size=self.params["eval_batch_size"], device=self.device, rows=rows,
            resident_bytes=0,
        )
        with autocast(self.device, self.params["precision"]):
            return torch.cat([encoder(x).float() for _, x in loader])

    def _mmd_scores(
        self, residuals: ScaledResiduals, ranking: torch.Tensor, *, timings: dict[str, float] | None = None
    ) -> torch.Tensor:
        p = self.params
        if residuals.shape[0] < 4:
            raise ValueError(
                f"target: {residuals.shape[0]} cell(s); the MMD score needs at least 4 target "
                "cells (two groups of two); use score='residual' for fewer"
            )
        # A known ratio only sets the threshold: fixing the MMD group sizes or the warm
        # start's pseudo-labels from it scored worse (benchmarks/RESULTS.md, issue 3).
        predictor = fit_predictor(
            residuals, ratio=None, config=self._scorer_config(),
            ranking=ranking.to(residuals.device), anchors=self.anchors_ if p["anchor"] else None,
            seed=p["random_state"], verbose=p["verbose"], timings=timings,
        )
        return predict_logits(predictor, residuals).float().cpu()

    def _call(self, scores: torch.Tensor, score: Score) -> tuple[np.ndarray, float]:
        """Anomaly calls: top ``ratio * N``, else the top component of a Gaussian mixture."""
        values = scores.numpy().astype(np.float64)
        ratio = self.params["anomaly_ratio"]
        if ratio is not None:
            n_top = round(ratio * len(values))
            if n_top == 0:
                return np.zeros(len(values), dtype=bool), float("inf")
            order = np.argsort(-values, kind="stable")
            anomaly = np.zeros(len(values), dtype=bool)
            anomaly[order[:n_top]] = True
            return anomaly, float(values[order[n_top - 1]])
        if score == "mmd":  # 3 components: p > 0.5 over-called 1.6-1.8x on held-out PBMC types
            anomaly = mixture_calls(values, 3)
        else:
            anomaly = mixture_calls(np.log1p(np.maximum(values, 0.0)), 2)
        return anomaly, float(values[anomaly].min()) if anomaly.any() else float("inf")

    def score(self, target: AnnData | str | os.PathLike) -> np.ndarray:
        """One anomaly score per target cell (higher = more anomalous)."""
        return self.evaluate(target).score

    def predict(self, target: AnnData | str | os.PathLike) -> np.ndarray:
        """Boolean anomaly calls, one per target cell."""
        return self.evaluate(target).anomaly

    # ------------------------------------------------------------------ stages II-IV
    def run(
        self,
        reference: AnnData | str | os.PathLike,
        target: AnnData,
        *,
        batch_key: str | None = None,
        anomaly_ratio: float | None = None,
        n_subtypes: int | Literal["auto"] = "auto",
        kin: Literal["nearest", "learned"] = "nearest",
        correct: bool = True,
        corrected_out: Any = None,
        key_added: str = "acsleuth",
        checkpoint: Checkpoint | None = None,
    ) -> AnnData:
        """The whole pipeline: detect, batch-correct and subtype the anomalies of ``target``.

        Fits module I on ``reference`` unless fitted; scores ``target`` (:meth:`evaluate`);
        matches its normal cells to reference kin and trains the style transfer on them
        (:meth:`correct`, skipped with ``correct=False``); subtypes the anomalies from the
        corrected (else the uncorrected) expression (:meth:`subtype`).

        Parameters
        ----------
        reference
            Normal reference cells (AnnData, backed AnnData or a path).
        target
            The AnnData to screen; written into in place.
        batch_key
            ``obs`` column of the target batches; one batch when None.
        anomaly_ratio
            Overrides the model's ``anomaly_ratio`` for this call only (None: the model's).
        n_subtypes
            Number of subtypes, or ``"auto"``.
        kin
            ``"nearest"`` or ``"learned"`` kin matching (SPEC §2).
        correct
            Run stages II-III; False subtypes the uncorrected expression.
        corrected_out
            Where the corrected expression goes instead of ``target`` (an array taking row
            slices, e.g. an ``h5py`` dataset of shape ``(n_obs, len(genes_))``, so an atlas
            is streamed to disk); subtyping reads the anomalies' rows back from it.
        key_added
            Prefix of every key written.
        checkpoint
            Checkpoints module I (with the fitted model) and the style transfer
            (:class:`~acsleuth.train.Checkpoint`); resuming one skips what it holds, and on
            the CPU a resumed run ends with the results of an uninterrupted one. The other
            stages are recomputed from the fitted model: they are seeded, so they repeat
            exactly. Single-process runs only.

        Under ``torchrun`` every rank calls ``run`` with the same arguments: every stage runs
        data-parallel (:mod:`acsleuth.parallel`; DESC's centroids and target distribution
        are all-reduced), and rank 0 is the only rank whose ``target`` is written into.

        Returns
        -------
        ``target``, having the keys of :func:`acsleuth.tl.score_anomalies`, plus

        - ``layers[f"{key_added}_corrected"]`` (``target``'s genes are the model's panel in
          order) or ``obsm[f"{key_added}_corrected"]``: corrected expression (``correct=True``)
        - ``obs[f"{key_added}_subtype"]``: categorical subtype, NaN for normal cells
        - ``obsm[f"X_{key_added}_subtype"]``: the embedding DESC clustered, NaN rows for normal
          cells (``obsm[f"X_{key_added}"]`` keeps module I's embedding of every cell)
        - ``uns[key_added]``: also ``n_subtypes``, ``silhouette_curve`` and the ``"kin"``,
          ``"style"`` and ``"subtype"`` timings
        """
        if not isinstance(target, AnnData):
            raise TypeError(f"run: target must be an AnnData, got {type(target).__name__}")
        if checkpoint is not None:
            checkpoint.bind(self._fingerprint(reference=reference, target=target))
        if not self.is_fitted:
            self.fit(reference, checkpoint=checkpoint)
        saved = self.params["anomaly_ratio"]
        try:
            if anomaly_ratio is not None:
                self.params["anomaly_ratio"] = anomaly_ratio
                self._check_params()
            result = self.evaluate(target, batch_key=batch_key)
            main = parallel.context().is_main
            if main:  # the parameters written include the override
                tl._write_scores(target, self, result, None, key_added)
        finally:
            self.params["anomaly_ratio"] = saved
        anomaly = result.anomaly
        timings: dict[str, float] = {}
        if correct:
            corrected = self.correct(
                target, reference, normal=~anomaly, batch_key=batch_key, kin=kin, out=corrected_out,
                timings=timings, checkpoint=checkpoint,
            )
            if main and corrected_out is None:
                tl._write_corrected(target, self, corrected, key_added)
        x = None
        if main and correct and corrected_out is not None:
            x = np.asarray(corrected_out[np.flatnonzero(anomaly)], dtype=np.float32)
        elif main:
            x = tl._corrected_expression(target, self, key_added, np.flatnonzero(anomaly))
        # every rank clusters the anomalies (DESC trains on each rank's shard of them)
        result = self.subtype(parallel.broadcast_array(x, parallel.context()), n_subtypes=n_subtypes,
                              timings=timings)
        if not main:
            return target
        tl._write_subtypes(target, anomaly, result, key_added)
        tl._add_timings(target, key_added, timings)
        return target

    def correct(
        self,
        target: AnnData | str | os.PathLike,
        reference: AnnData | str | os.PathLike,
        *,
        normal: np.ndarray,
        batch_key: str | None = None,
        kin: Literal["nearest", "learned"] = "nearest",
        anomalies: Literal["shift", "generator"] = "shift",
        out: Any = None,
        timings: dict[str, float] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Any:
        """Batch-corrected expression of every target cell (modules II-III, SPEC §2-§3).

        ``normal`` (one bool per target cell) selects the cells matched to reference kin by
        their encoder embeddings and used to train the style transfer; ``batch_key`` names
        the ``obs`` column of target batches (one batch when None). Normal cells get the
        style transfer's output. With ``anomalies="shift"`` anomalous cells get their own
        expression plus their batch's mean correction (output minus input over its normal
        cells): the generator, trained on normal cells only, maps an unseen cell type onto a
        normal one, and subtyping its output lost much of the subtype signal
        (benchmarks/RESULTS.md, issue 4); ``"generator"`` gives them its output (SPEC §3).
        Seconds go to ``timings["kin"]`` and ``timings["style"]``. ``checkpoint`` checkpoints
        and resumes the style transfer's training.

        Returns ``out``, filled chunk by chunk with the float32 ``(n_obs, n_genes_)``
        corrected expression: any array taking row-slice assignment (a numpy array or
        memmap, or an ``h5py`` dataset to stream an atlas to disk); a new numpy array when
        None.
        """
        self._require_fitted()
        if kin not in ("nearest", "learned"):
            raise ValueError(f"ACsleuth: kin must be 'nearest' or 'learned', got {kin!r}")
        if anomalies not in ("shift", "generator"):
            raise ValueError(f"ACsleuth: anomalies must be 'shift' or 'generator', got {anomalies!r}")
        p = self.params
        timings = {} if timings is None else timings
        target_source = prepare(target, genes=self.genes_, name="target")
        reference_source = prepare(reference, genes=self.genes_, name="reference")
        normal = np.asarray(normal, dtype=bool)
        if normal.shape != (target_source.n_obs,):
            raise ValueError(f"normal must be {target_source.n_obs} booleans, got shape {normal.shape}")
        shape = (target_source.n_obs, len(self.genes_))
        if out is not None and tuple(out.shape) != shape:
            raise ValueError(f"correct: out has shape {tuple(out.shape)}, expected {shape} (cells x model genes)")
        codes, n_batches = batch_codes(target_source.adata, batch_key)
        ctx = parallel.context()
        first, last = parallel.shard_bounds(target_source.n_obs, ctx)  # all cells in one process
        normal_rows = np.flatnonzero(normal)
        mine = normal_rows[(normal_rows >= first) & (normal_rows < last)]
        with self._seeded():
            with stage_timer(timings, "kin"):
                kin_rows = self._kin(target_source, reference_source, mine, kin)
            with stage_timer(timings, "style"):
                style = StyleTransfer(len(self.genes_), n_batches, init=self.generator_)
                config = StyleConfig(
                    epochs=p["style_epochs"], batch_size=max(2, p["batch_size"] // ctx.world_size),
                    lr=p["learning_rate"], critic_steps=p["style_n_critic"],
                    reconstruction_weight=p["reconstruction_weight"],
                    adversarial_weight=p["adversarial_weight"], gp_weight=p["gp_weight"],
                    precision=p["precision"],
                )
                train_style(
                    style, target_source, mine, kin_rows, reference_source, codes,
                    config=config, device=self.device, seed=p["random_state"] + ctx.rank,
                    verbose=p["verbose"] and ctx.is_main, checkpoint=checkpoint,
                )
                parallel.average_buffers(style, ctx)
                corrected = None
                if ctx.is_main:
                    corrected = np.empty(shape, dtype=np.float32) if out is None else out
                shift = torch.zeros((n_batches, len(self.genes_)), dtype=torch.float64, device=self.device)
                chunks = apply_style(
                    style, target_source, codes, device=self.device, chunk=p["eval_batch_size"],
                    rows=np.arange(first, last),
                )
                nothing = torch.zeros((0, len(self.genes_)))
                for rows, x, styled in parallel.lockstep_padded(
                    chunks, ctx, (np.zeros(0, dtype=np.int64), nothing, nothing)
                ):
                    x, styled = x.cpu().numpy(), styled.cpu().numpy()
                    if anomalies == "shift":
                        kept, chunk_codes = normal[rows], codes[rows]
                        delta = torch.from_numpy(styled[kept] - x[kept]).to(shift)
                        index = torch.from_numpy(chunk_codes[kept]).to(self.device)
                        shift.index_add_(0, index, delta)
                        styled[~kept] = x[~kept]  # the batch's mean correction is added below
                    rows, styled = parallel.gather_to_main(rows, ctx), parallel.gather_to_main(styled, ctx)
                    if corrected is not None:  # one run of rows per rank
                        for run in np.split(np.arange(rows.size), np.flatnonzero(np.diff(rows) != 1) + 1):
                            if run.size:
                                corrected[int(rows[run[0]]):int(rows[run[-1]]) + 1] = styled[run]
                if anomalies == "shift":
                    shift = parallel.all_reduce_sum(shift, ctx).cpu().numpy()
                    shift /= np.maximum(np.bincount(codes[normal], minlength=n_batches), 1)[:, None]
                    anomalous = np.flatnonzero(~normal) if corrected is not None else []
                    for i in range(0, len(anomalous), p["eval_batch_size"]):
                        rows = anomalous[i:i + p["eval_batch_size"]]
                        corrected[rows] = corrected[rows] + shift[codes[rows]].astype(np.float32)
        return corrected

    def _kin(
        self,
        target: ExpressionSource,
        reference: ExpressionSource,
        rows: np.ndarray,
        kin: Literal["nearest", "learned"],
    ) -> np.ndarray:
        """Reference kin rows of target ``rows`` (module II) from encoder embeddings.

        In a distributed run ``rows`` are this rank's normal cells; every rank embeds its
        shard of reference cells and the nearest kin come from a top-k search sharded by
        reference rows, merged over ranks (:func:`acsleuth.parallel.sharded_kin_topk`).
        """
        p, ctx = self.params, parallel.context()
        z_target = self.embed(target, rows)
        if not ctx.distributed:
            z_reference = self.embed(reference)
            if kin == "nearest":
                return nearest_kin(z_target, z_reference)
            return learned_kin(
                z_target, z_reference, config=KinConfig(epochs=p["kin_epochs"]), seed=p["random_state"],
                verbose=p["verbose"],
            )
        first, last = parallel.shard_bounds(reference.n_obs, ctx)
        z_reference = self.embed(reference, np.arange(first, last))
        queries = parallel.all_gather_rows(z_target, ctx)
        offset = parallel.row_offset(len(rows), ctx)
        if kin == "nearest":
            _, index = parallel.sharded_kin_topk(queries, z_reference, key_offset=first, k=1, ctx=ctx)
            every = index[:, 0].cpu().numpy()
        else:  # the learned mapping trains on all embeddings, identically on every rank
            every = learned_kin(
                queries, parallel.all_gather_rows(z_reference, ctx), config=KinConfig(epochs=p["kin_epochs"]),
                seed=p["random_state"], verbose=p["verbose"] and ctx.is_main,
            )
        return every[offset:offset + len(rows)]

    def subtype(
        self,
        x: np.ndarray,
        *,
        n_subtypes: int | Literal["auto"] = "auto",
        timings: dict[str, float] | None = None,
    ) -> SubtypeResult | None:
        """Subtypes of the anomalies from their (corrected) expression ``x (N, n_genes_)``.

        None (logged) when ``N == 0``; one subtype when ``N < 3``. A number of subtypes
        above ``N`` is lowered to ``N`` with a warning (how many anomalies are called is
        known only now). Seconds go to ``timings["subtype"]`` (and its sub-stages).
        """
        self._require_fitted()
        p = self.params
        n_subtypes = check_n_subtypes(n_subtypes)
        if len(x) == 0:
            logger.info("subtype: no anomaly was called; nothing to subtype")
            return None
        k = 1 if len(x) < 3 else n_subtypes
        if n_subtypes != "auto" and n_subtypes > len(x):
            k = min(k, len(x))
            warnings.warn(
                f"subtype: n_subtypes={n_subtypes} is more than the {len(x)} anomalies called; "
                f"making {k} subtype(s) instead (pass a smaller n_subtypes, or 'auto')",
                UserWarning, stacklevel=2,
            )
        timings = {} if timings is None else timings
        with stage_timer(timings, "subtype"):
            return subtype_anomalies(
                self.generator_.encoder, self.generator_, torch.as_tensor(x),
                n_subtypes=k,
                config=SubtypeConfig(
                    embedding=p["subtype_embedding"], epochs=p["subtype_epochs"],
                    eval_batch_size=p["eval_batch_size"],
                ),
                device=self.device, seed=p["random_state"], verbose=p["verbose"], timings=timings,
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` (parameters, genes, version) and ``weights.pt`` into ``path``.

        The folder is written under a temporary name and renamed; an existing ``path`` is
        refused unless ``overwrite=True``.
        """
        from . import __version__

        self._require_fitted()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            config = {
                "format": 1, "acsleuth_version": __version__, "params": self.params,
                "genes": self.genes_, "history": self.history_, "timings": self.timings_,
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
            torch.save(
                {
                    "generator": self.generator_.state_dict(), "critic": self.critic_.state_dict(),
                    "residual_scale": self.residual_scale_, "anchors": self.anchors_,
                },
                tmp / WEIGHTS_FILE,
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> ACsleuth:
        """A model saved by :meth:`save`; ``device`` overrides the saved one."""
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not a saved ACsleuth model: {name} is missing")
        config = json.loads((path / CONFIG_FILE).read_text())
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        return cls(**params)._load_fitted(path, config)

    def _load_fitted(self, path: Path, config: dict[str, Any] | None = None) -> ACsleuth:
        """Read the genes, weights and history of a model saved by :meth:`save` into ``self``
        (``config``: its ``config.json``, when already read)."""
        if config is None:
            config = json.loads((path / CONFIG_FILE).read_text())
        genes = list(config["genes"])
        state = torch.load(path / WEIGHTS_FILE, map_location=self.device, weights_only=True)
        self.generator_ = self._new_generator(len(genes))
        self.critic_ = Critic(len(genes)).to(self.device)
        self.generator_.load_state_dict(state["generator"])
        self.critic_.load_state_dict(state["critic"])
        self.residual_scale_, self.anchors_ = state["residual_scale"], state["anchors"]
        self.generator_.eval()
        self.critic_.eval()
        self.genes_, self.history_ = genes, config.get("history", {})
        self.timings_ = config.get("timings", {})
        return self

    def __repr__(self) -> str:
        state = f"fitted on {len(self.genes_)} genes" if self.is_fitted else "not fitted"
        return f"ACsleuth(score={self.params['score']!r}, device={self.device.type!r}, {state})"


def batch_codes(adata: AnnData, batch_key: str | None) -> tuple[np.ndarray, int]:
    """``(n_obs,)`` int64 codes of ``adata.obs[batch_key]`` (its categories) and their number."""
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64), 1
    if batch_key not in adata.obs:
        raise KeyError(
            f"target: batch_key {batch_key!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    batches = pd.Categorical(adata.obs[batch_key])
    if (batches.codes < 0).any():
        raise ValueError(f"target: obs[{batch_key!r}] has missing values; every cell needs a batch")
    return batches.codes.astype(np.int64), len(batches.categories)


def mixture_calls(values: np.ndarray, n_components: int) -> np.ndarray:
    """Whether each value falls in the highest-mean component of a 1-D Gaussian mixture."""
    from sklearn.mixture import GaussianMixture

    x = values[:, None]
    if len(x) < n_components or np.ptp(x) == 0:
        return np.zeros(len(values), dtype=bool)
    gmm = GaussianMixture(n_components, random_state=0).fit(x)
    return gmm.predict(x) == int(np.argmax(gmm.means_[:, 0]))


__all__ = ["SCORES", "ACsleuth", "ScoreResult"]
