"""The user-facing model: ``ACsleuth(...).fit(reference)``, then score / predict target cells.

Orchestration only: each stage's computation is in :mod:`acsleuth.stages`, the settings and
their defaults in :mod:`acsleuth._constants`, what is written into AnnData in
:mod:`acsleuth._anndata.detect`, and saving and loading in :mod:`acsleuth.model.persist`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from anndata import AnnData

from .. import ops, parallel
from .._anndata import add_timings, batch_codes
from .._anndata import detect as contract
from .._constants import (
    ANOMALY_EXPRESSIONS,
    DEFAULTS,
    KINS,
    AnomalyExpression,
    Gamma,
    Kernel,
    Kin,
    Params,
    Precision,
    Score,
    SubtypeEmbedding,
)
from .._logging import logger, stage_timer
from .._seed import seeded
from ..data import ExpressionSource, MinibatchLoader, highly_variable_genes, prepare
from ..nn import Critic, Generator
from ..stages.detect import train_detector
from ..stages.kin import find_kin
from ..stages.residuals import ScaledResiduals
from ..stages.score import (
    Detector,
    ScoreResult,
    call_anomalies,
    embed,
    reconstruct_target,
    reference_residuals,
    score_target,
)
from ..stages.style import correct_cells, fit_style
from ..stages.subtype import SubtypeResult, check_n_subtypes, subtype_anomalies
from ..train import Checkpoint
from . import persist

DEFAULT_CACHE_BYTES = 2 << 30  # cache_gb=None on CPU


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
        n_top_genes: int = DEFAULTS.n_top_genes,
        prepare_epochs: int = DEFAULTS.prepare_epochs,
        train_epochs: int = DEFAULTS.train_epochs,
        score_epochs: int = DEFAULTS.score_epochs,
        batch_size: int = DEFAULTS.batch_size,
        score: Score = DEFAULTS.score,
        kernel: Kernel = DEFAULTS.kernel,
        gamma: Gamma = DEFAULTS.gamma,
        anomaly_ratio: float | None = DEFAULTS.anomaly_ratio,
        score_batch_size: int | None = DEFAULTS.score_batch_size,
        warm_epochs: int = DEFAULTS.warm_epochs,
        anchor: bool = DEFAULTS.anchor,
        n_memory: int = DEFAULTS.n_memory,
        memory_temperature: float = DEFAULTS.memory_temperature,
        memory_shrink: float = DEFAULTS.memory_shrink,
        n_critic: int = DEFAULTS.n_critic,
        style_n_critic: int = DEFAULTS.style_n_critic,
        reconstruction_weight: float = DEFAULTS.reconstruction_weight,
        adversarial_weight: float = DEFAULTS.adversarial_weight,
        gp_weight: float = DEFAULTS.gp_weight,
        learning_rate: float = DEFAULTS.learning_rate,
        eval_batch_size: int = DEFAULTS.eval_batch_size,
        kin_epochs: int = DEFAULTS.kin_epochs,
        style_epochs: int = DEFAULTS.style_epochs,
        subtype_epochs: int = DEFAULTS.subtype_epochs,
        subtype_embedding: SubtypeEmbedding = DEFAULTS.subtype_embedding,
        cache_gb: float | None = DEFAULTS.cache_gb,
        precision: Precision = DEFAULTS.precision,
        device: str = DEFAULTS.device,
        random_state: int = DEFAULTS.random_state,
        verbose: bool = DEFAULTS.verbose,
    ) -> None:
        self.params: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        Params(**self.params)  # checks every setting before anything is built
        self.device = resolve_device(device)
        self.genes_: list[str] | None = None
        self.generator_: Generator | None = None
        self.critic_: Critic | None = None
        self.residual_scale_: torch.Tensor | None = None
        self.anchors_: torch.Tensor | None = None
        self.history_: dict[str, list[dict[str, float]]] = {}
        self.timings_: dict[str, float] = {}

    @property
    def settings(self) -> Params:
        """:attr:`params` as a checked, frozen :class:`~acsleuth._constants.Params`."""
        return Params(**self.params)

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

    def _new_generator(self, n_genes: int) -> Generator:
        return Generator(n_genes, **self.settings.generator_settings()).to(self.device)

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
        p = self.settings
        with stage_timer(timings, "prepare data"):
            source = prepare(reference, name="reference")
            genes = highly_variable_genes(source, p.n_top_genes, seed=p.random_state)
            source = source.with_genes(genes)
        ctx = parallel.context()
        if source.n_obs < 2 * ctx.world_size:
            raise ValueError(
                f"reference: {source.n_obs} cell(s); module I needs at least 2 normal cells "
                f"(BatchNorm statistics) per process ({ctx.world_size} processes)"
            )
        rows = parallel.shard_rows(source.n_obs, ctx)  # all cells in a single process
        with seeded(p.random_state, self.device):
            generator = self._new_generator(len(genes))
            critic = Critic(len(genes)).to(self.device)
            parallel.broadcast_module(generator, ctx)
            loader = MinibatchLoader(
                source, batch_size=min(max(2, p.batch_size // ctx.world_size), rows.size),
                shuffle=True, drop_last=True, seed=p.random_state + ctx.rank, device=self.device,
                resident_bytes=self._cache_bytes(), rows=rows,
            )
            with stage_timer(timings, "module I"):
                history = train_detector(
                    generator, critic, loader, p.detector_config(), verbose=p.verbose and ctx.is_main,
                    timings=timings, checkpoint=checkpoint,
                )
                parallel.average_buffers(generator, ctx)
            with stage_timer(timings, "reference residuals"):
                scale, anchors = reference_residuals(generator, source, p, self.device)
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

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("ACsleuth: call fit(reference) (or ACsleuth.load(dir)) before scoring")

    def _detector(self) -> Detector:
        return Detector(self.generator_, self.critic_, self.residual_scale_, self.anchors_)

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
        settings = self.settings
        if score is not None:
            settings = replace(settings, score=score)
        return self._evaluate(target, settings, batch_key)

    def _evaluate(
        self, target: AnnData | str | os.PathLike, p: Params, batch_key: str | None
    ) -> ScoreResult:
        """:meth:`evaluate` with the settings ``p`` (this call's score and anomaly ratio)."""
        timings: dict[str, float] = {}
        with stage_timer(timings, "prepare target"):
            source = prepare(target, genes=self.genes_, name="target")
        if p.score == "mmd" and source.n_obs < 4:
            raise ValueError(
                f"target: {source.n_obs} cell(s); the MMD score compares groups of target cells "
                "and needs at least 4 target cells (score more cells together, or use "
                "score='scaled', which scores each cell on its own)"
            )
        codes, _ = batch_codes(source.adata, batch_key)
        with seeded(p.random_state, self.device):
            scores, embedding = score_target(
                self._detector(), source, p, codes if batch_key is not None else None,
                device=self.device, budget=self._cache_bytes(), timings=timings,
            )
        chosen = scores[p.score]
        anomaly, threshold = call_anomalies(chosen, p.score, p.anomaly_ratio)
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
        and the ``(n_obs, 256)`` encoder embeddings
        (:func:`acsleuth.stages.score.reconstruct_target`)."""
        self._require_fitted()
        return reconstruct_target(
            self._detector(), source, self.settings, device=self.device,
            budget=self._cache_bytes(), keep_residuals=keep_residuals, codes=codes,
        )

    def embed(self, source: ExpressionSource, rows: np.ndarray | None = None) -> torch.Tensor:
        """Module I encoder embeddings ``(n, 256)`` of ``rows`` (all cells when None), in chunks.

        Only the encoder runs: cheaper than :meth:`reconstruct` when no score is needed.
        """
        self._require_fitted()
        return embed(self.generator_, source, rows, self.settings, self.device)

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
            ``"nearest"`` or ``"learned"`` kin matching (docs/method.md §2).
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
        settings, params = self.settings, dict(self.params)
        if anomaly_ratio is not None:  # this call only; the parameters written include it
            settings = replace(settings, anomaly_ratio=anomaly_ratio)
            params["anomaly_ratio"] = anomaly_ratio
        result = self._evaluate(target, settings, batch_key)
        main = parallel.context().is_main
        if main:
            contract.write_scores(
                target, result, params, backend=ops.backend(self.device),
                timings={**self.timings_, **result.timings}, key_added=key_added,
            )
        anomaly = result.anomaly
        timings: dict[str, float] = {}
        if correct:
            corrected = self.correct(
                target, reference, normal=~anomaly, batch_key=batch_key, kin=kin, out=corrected_out,
                timings=timings, checkpoint=checkpoint,
            )
            if main and corrected_out is None:
                contract.write_corrected(target, corrected, self.genes_, key_added)
        x = None
        if main and correct and corrected_out is not None:
            x = np.asarray(corrected_out[np.flatnonzero(anomaly)], dtype=np.float32)
        elif main:
            x = contract.corrected_expression(target, self.genes_, key_added, np.flatnonzero(anomaly))
        # every rank clusters the anomalies (DESC trains on each rank's shard of them)
        result = self.subtype(parallel.broadcast_array(x, parallel.context()), n_subtypes=n_subtypes,
                              timings=timings)
        if main:
            contract.write_subtypes(target, anomaly, result, key_added)
            add_timings(target, key_added, timings)
        return target

    def correct(
        self,
        target: AnnData | str | os.PathLike,
        reference: AnnData | str | os.PathLike,
        *,
        normal: np.ndarray,
        batch_key: str | None = None,
        kin: Kin = "nearest",
        anomalies: AnomalyExpression = "shift",
        out: Any = None,
        timings: dict[str, float] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Any:
        """Batch-corrected expression of every target cell (modules II-III, docs/method.md §2-§3).

        ``normal`` (one bool per target cell) selects the cells matched to reference kin by
        their encoder embeddings and used to train the style transfer; ``batch_key`` names
        the ``obs`` column of target batches (one batch when None). Normal cells get the
        style transfer's output. With ``anomalies="shift"`` anomalous cells get their own
        expression plus their batch's mean correction (output minus input over its normal
        cells): the generator, trained on normal cells only, maps an unseen cell type onto a
        normal one, and subtyping its output lost much of the subtype signal
        (benchmarks/RESULTS.md, issue 4); ``"generator"`` gives them its output (docs/method.md §3).
        Seconds go to ``timings["kin"]`` and ``timings["style"]``. ``checkpoint`` checkpoints
        and resumes the style transfer's training.

        Returns ``out``, filled chunk by chunk with the float32 ``(n_obs, n_genes_)``
        corrected expression: any array taking row-slice assignment (a numpy array or
        memmap, or an ``h5py`` dataset to stream an atlas to disk); a new numpy array when
        None.
        """
        self._require_fitted()
        if kin not in KINS:
            raise ValueError(f"ACsleuth: kin must be 'nearest' or 'learned', got {kin!r}")
        if anomalies not in ANOMALY_EXPRESSIONS:
            raise ValueError(f"ACsleuth: anomalies must be 'shift' or 'generator', got {anomalies!r}")
        p = self.settings
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
        with seeded(p.random_state, self.device):
            with stage_timer(timings, "kin"):
                kin_rows = self._kin(target_source, reference_source, mine, kin)
            with stage_timer(timings, "style"):
                style = fit_style(
                    self.generator_, target_source, reference_source, mine, kin_rows, codes,
                    n_batches, p, device=self.device, checkpoint=checkpoint,
                )
                return correct_cells(
                    style, target_source, normal, codes, n_batches, p, device=self.device,
                    anomalies=anomalies, out=out,
                )

    def _kin(
        self, target: ExpressionSource, reference: ExpressionSource, rows: np.ndarray, kin: Kin
    ) -> np.ndarray:
        """Reference kin rows of target ``rows`` (module II; :func:`acsleuth.stages.kin.find_kin`)."""
        return find_kin(self.generator_, target, reference, rows, kin, self.settings, self.device)

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
        p = self.settings
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
                self.generator_.encoder, self.generator_, torch.as_tensor(x), n_subtypes=k,
                config=p.subtype_config(), device=self.device, seed=p.random_state,
                verbose=p.verbose, timings=timings,
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` (format, parameters, genes, version) and ``weights.pt`` into
        ``path`` (:mod:`acsleuth.model.persist`).

        The folder is written under a temporary name and renamed; an existing ``path`` is
        refused unless ``overwrite=True``.
        """
        self._require_fitted()
        return persist.write(
            path, params=self.params, genes=self.genes_, history=self.history_,
            timings=self.timings_, overwrite=overwrite,
            weights={
                "generator": self.generator_.state_dict(), "critic": self.critic_.state_dict(),
                "residual_scale": self.residual_scale_, "anchors": self.anchors_,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> ACsleuth:
        """A model saved by :meth:`save`; ``device`` overrides the saved one.

        A folder of another format, a missing file, or weights that do not match the saved
        gene list are refused with a line saying which.
        """
        config = persist.read_config(path)
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        return cls(**params)._load_fitted(Path(path), config)

    def _load_fitted(self, path: Path, config: dict[str, Any] | None = None) -> ACsleuth:
        """Read the genes, weights and history of a model saved by :meth:`save` into ``self``
        (``config``: its checked ``config.json``, when already read)."""
        if config is None:
            config = persist.read_config(path)
        genes = list(config["genes"])
        state = persist.read_weights(path, len(genes), self.device)
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


__all__ = ["ACsleuth", "ScoreResult", "resolve_device"]
