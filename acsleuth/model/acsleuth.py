"""The user-facing model: ``ACsleuth(...).fit(reference)``, then score / predict target cells.

Orchestration only: each stage's computation is in :mod:`acsleuth.stages`, the settings and
their defaults in :mod:`acsleuth._constants`, what is written into AnnData in
:mod:`acsleuth._anndata.detect`, and saving and loading in :mod:`acsleuth.model.persist`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from anndata import AnnData

from .. import ops, parallel
from .._anndata import add_history, add_timings, source_path
from .._anndata import detect as contract
from .._constants import (
    DEFAULTS,
    KEY_ADDED,
    Gamma,
    Kernel,
    Kin,
    Params,
    Precision,
    Score,
    SubtypeEmbedding,
    WarmRanking,
)
from .._device import cache_bytes, resolve_device
from .._logging import logger, stage_timer
from .._seed import seeded
from .._threads import with_threads
from ..data import ExpressionSource, highly_variable_genes, prepare
from ..data.checks import check_inputs
from ..nn import Critic, Generator
from ..stages.detect import fit_detector
from ..stages.neighbours import ReferenceNeighbours, fit_reference_index
from ..stages.residuals import ScaledResiduals
from ..stages.score import (
    Detector,
    ScoreResult,
    embed,
    evaluate_target,
    reconstruct_target,
    reference_residuals,
)
from ..train import Checkpoint
from ..train.checkpoint import fingerprint
from . import persist
from .familiar import FamiliarAPI
from .pipeline import PipelineStages


class ACsleuth(FamiliarAPI, PipelineStages, persist.Persistent):
    """Anomalous-cell detection with ACsleuth (docs/method.md §1): fit on normal reference cells, score targets.

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
        ``"mmd"`` (default: the paper's gamma_c predictor, warm-started from the ``"knn"``
        ranking), ``"knn"`` (the distance to the reference in its PCs), ``"ensemble"`` (rank
        average of the two), ``"scaled"`` (``||(x - x_hat) / s||``), ``"residual"``,
        ``"cosine"`` or ``"critic"`` (README.md, docs/method.md §1).
    kernel, gamma
        Kernel and weight function of the MMD predictor (docs/method.md §1.1).
    anomaly_ratio
        Expected fraction of anomalies: the top ``ratio * N`` cells are called anomalous.
        ``None``: the top ``n``, ``n`` estimated from the reference's null distances
        (:func:`~acsleuth.stages.neighbours.count_anomalies`); the MMD predictor: soft sizes.
    score_batch_size, warm_epochs, warm_ranking, anchor
        Minibatch size of the MMD predictor (``None``: one full pass per epoch), the epochs
        it first spends learning the top half of a ranking, that ranking (``"knn"``, the
        default, or ``"scaled"``; a model without a neighbour index uses ``"scaled"``), and
        whether reference residuals join its minibatches as known normal cells.
    batch_scale
        With a ``batch_key``, divide each batch's per-gene scale out of the ``"knn"`` distance
        and the corrected expression (:mod:`acsleuth.stages.batch_scale`; see :meth:`evaluate`).
    n_memory, memory_temperature, memory_shrink
        The memory bank's size, softmax temperature and hard-shrinkage threshold (docs/method.md §1).
    n_critic, style_n_critic
        Critic updates per generator update in module I and in the style transfer.
    reconstruction_weight, adversarial_weight, gp_weight
        alpha, beta and lambda of the WGAN-GP losses of modules I and III (docs/method.md §1, §3).
    kin_epochs, style_epochs, subtype_epochs
        Epochs of the learned kin mapping (module II, ``kin="learned"``), of the style
        transfer (module III) and the most epochs of DESC (module IV), used by :meth:`run`.
    subtype_embedding
        What DESC clusters (module IV): ``"pca"``, principal components of the anomalies'
        expression (default: the higher F1 x NMI on the two-batch PBMC evaluation), or
        ``"fusion"``, the transformer fusion (docs/method.md §4) of ``E(x)`` and ``E(x - x_hat)``.
    cache_gb
        Largest cache held in memory (on the GPU when the device is CUDA): the dense
        training data, the target's float16 scaled residuals, its embeddings. Larger
        ones are streamed from the input or from a temporary file. None: 2 GB on CPU,
        half the free GPU memory on CUDA.
    precision
        ``"fp32"``, or ``"bf16"``: the networks' forward passes (GANs, embeddings, the MMD
        predictor's training) run under bf16 autocast; losses and scores stay float32.
        ``"auto"``: bf16 training of module I and the predictor on AMX/AVX512-BF16 CPUs.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    random_state
        Seed of every random choice (weights, minibatches, dropout).
    verbose
        Progress bars on a terminal, a progress line every 30 s elsewhere (stage lines follow
        scanpy's verbosity, see :mod:`acsleuth._logging`).
    n_jobs
        CPU threads: None the usable cores minus those other processes keep busy, -1 all
        usable cores, or a number (:mod:`acsleuth._threads`).

    scikit-learn's, pyod's and scvi-tools' method names work too: :mod:`acsleuth.model.familiar`.
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
        warm_ranking: WarmRanking = DEFAULTS.warm_ranking,
        anchor: bool = DEFAULTS.anchor,
        batch_scale: bool = DEFAULTS.batch_scale,
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
        n_jobs: int | None = DEFAULTS.n_jobs,
    ) -> None:
        self.params: dict[str, Any] = {
            k: v for k, v in locals().items() if k not in ("self", "__class__")
        }
        Params(**self.params)  # checks every setting before anything is built
        self.device = resolve_device(device)
        self.genes_: list[str] | None = None
        self.generator_: Generator | None = None
        self.critic_: Critic | None = None
        self.residual_scale_: torch.Tensor | None = None
        self.anchors_: torch.Tensor | None = None
        self.neighbours_: ReferenceNeighbours | None = None
        self.history_: dict[str, list[dict[str, float]]] = {}
        self.timings_: dict[str, float] = {}

    @property
    def settings(self) -> Params:
        """:attr:`params` as a checked, frozen :class:`~acsleuth._constants.Params`."""
        return Params(**self.params)

    def _cache_bytes(self) -> int:
        """The ``cache_gb`` budget in bytes (see the class docstring for the default)."""
        return cache_bytes(self.params["cache_gb"], self.device)

    # ------------------------------------------------------------------ training
    @property
    def is_fitted(self) -> bool:
        return self.generator_ is not None

    @with_threads
    def fit(
        self,
        reference: AnnData | str | os.PathLike,
        *,
        checkpoint: Checkpoint | None = None,
        layer: str | None = None,
    ) -> ACsleuth:
        """Train module I on ``reference`` (normal cells only; AnnData, backed AnnData or a path;
        ``layers[layer]`` instead of ``X`` when ``layer`` is given).

        With a :class:`~acsleuth.train.Checkpoint` the training state is written every
        ``checkpoint.every`` epochs and on Ctrl-C, an interrupted fit is continued (to the
        same weights on the CPU), and the fitted model is written into the checkpoint too;
        resuming a checkpoint that holds it reads it instead of training.
        """
        if checkpoint is not None:
            checkpoint.bind(fingerprint(self.params, reference=reference))
            if checkpoint.has_model():
                logger.info("resumed: the fitted model is read from %s", checkpoint.model_dir)
                return self._load_fitted(checkpoint.model_dir)
        timings: dict[str, float] = {}
        p = self.settings
        with stage_timer(timings, "prepare data"):
            source = prepare(reference, name="reference", layer=layer)
            genes = highly_variable_genes(source, p.n_top_genes, seed=p.random_state)
            source = source.with_genes(genes)
        with seeded(p.random_state, self.device):
            generator, critic, history = fit_detector(
                source,
                p,
                device=self.device,
                resident_bytes=self._cache_bytes(),
                timings=timings,
                checkpoint=checkpoint,
            )
            with stage_timer(timings, "reference residuals"):
                scale, anchors = reference_residuals(generator, source, p, self.device)
            neighbours = fit_reference_index(source, p, self.device, timings)
        self.genes_, self.generator_, self.critic_ = genes, generator, critic
        self.residual_scale_, self.anchors_, self.neighbours_ = scale, anchors, neighbours
        self.history_, self.timings_ = history, timings
        logger.info("fitted module I on %d reference cells x %d genes", source.n_obs, len(genes))
        if checkpoint is not None:
            self.save(checkpoint.model_dir, overwrite=True)
        return self

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("ACsleuth: call fit(reference) or ACsleuth.load(dir) first")

    def _detector(self) -> Detector:
        return Detector(
            self.generator_, self.critic_, self.residual_scale_, self.anchors_, self.neighbours_
        )

    @with_threads
    def evaluate(
        self,
        target: AnnData | str | os.PathLike,
        *,
        score: Score | None = None,
        batch_key: str | None = None,
        layer: str | None = None,
    ) -> ScoreResult:
        """Score every target cell and call anomalies; returns every score type computed.

        With ``batch_key`` (an ``obs`` column of target batches) the scaled residuals behind
        ``"scaled"`` and ``"mmd"`` are centred per batch on their per-gene median (over up to
        20,000 cells per batch), and before the ``"knn"`` distance each batch is shifted onto
        the reference and (``batch_scale``) has its per-gene scale divided out.

        Cells are read and scored in chunks of ``eval_batch_size``; the float16 scaled
        residuals the MMD predictor trains on stay in memory within ``cache_gb``, else in a
        temporary file. ``layer``: read ``layers[layer]`` instead of ``X``. A cell's ``"mmd"``
        score depends on the other cells scored with it (the predictor trains on this target).
        """
        self._require_fitted()
        settings = self.settings
        if score is not None:
            settings = replace(settings, score=score)
        return self._evaluate(target, settings, batch_key, layer)

    def _evaluate(
        self,
        target: AnnData | str | os.PathLike,
        p: Params,
        batch_key: str | None,
        layer: str | None = None,
    ) -> ScoreResult:
        """:meth:`evaluate` with the settings ``p`` (this call's score and anomaly ratio)."""
        result = evaluate_target(
            self._detector(),
            target,
            self.genes_,
            p,
            batch_key,
            device=self.device,
            budget=self._cache_bytes(),
            layer=layer,
        )
        self.threshold_ = result.threshold
        return result

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
            self._detector(),
            source,
            self.settings,
            device=self.device,
            budget=self._cache_bytes(),
            keep_residuals=keep_residuals,
            codes=codes,
        )

    @with_threads
    def embed(
        self,
        data: ExpressionSource | AnnData | str | os.PathLike,
        rows: np.ndarray | None = None,
        *,
        layer: str | None = None,
    ) -> torch.Tensor:
        """Module I encoder embeddings ``(n, 256)`` of ``rows`` (all cells when None), in chunks,
        of an AnnData (genes matched to the model's by name), a path, or a prepared source.

        Only the encoder runs: cheaper than :meth:`reconstruct` when no score is needed.
        """
        self._require_fitted()
        source = (
            data
            if isinstance(data, ExpressionSource)
            else prepare(data, genes=self.genes_, name="target", layer=layer)
        )
        return embed(self.generator_, source, rows, self.settings, self.device)

    def score(self, target: AnnData | str | os.PathLike) -> np.ndarray:
        """One anomaly score per target cell (higher = more anomalous)."""
        return self.evaluate(target).score

    def predict(self, target: AnnData | str | os.PathLike) -> np.ndarray:
        """Boolean anomaly calls, one per target cell."""
        return self.evaluate(target).anomaly

    # ------------------------------------------------------------------ stages II-IV
    @with_threads
    def run(
        self,
        reference: AnnData | str | os.PathLike,
        target: AnnData,
        *,
        batch_key: str | None = None,
        anomaly_ratio: float | None = None,
        n_subtypes: int | Literal["auto"] = "auto",
        kin: Kin = "nearest",
        correct: bool = True,
        corrected_out: Any = None,
        key_added: str = KEY_ADDED,
        checkpoint: Checkpoint | None = None,
        layer: str | None = None,
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
        layer
            Read ``layers[layer]`` of both inputs instead of ``X`` (e.g. ``"counts"``). Before a
            fit, both inputs are checked first (:func:`acsleuth.data.checks.check_inputs`).

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
          ``"style"`` and ``"subtype"`` timings, the ``device`` that ran, in ``params``
          this call's arguments and the inputs' paths (when read from files), and in
          ``history`` each trained stage's per-epoch losses (``{stage: {loss: array}}``:
          module I's, the MMD predictor's, the style transfer's, DESC's)
        """
        if not isinstance(target, AnnData):
            raise TypeError(f"run: target must be an AnnData, got {type(target).__name__}")
        if checkpoint is not None:
            checkpoint.bind(fingerprint(self.params, reference=reference, target=target))
        if not self.is_fitted:
            check_inputs(
                reference, target, layer=layer, batch_key=batch_key, score=self.params["score"]
            )
            self.fit(reference, checkpoint=checkpoint, layer=layer)
        settings, params = self.settings, dict(self.params)
        params |= {
            "batch_key": batch_key,
            "n_subtypes": n_subtypes,
            "kin": kin,
            "correct": correct,
            "layer": layer,
            "reference": source_path(reference),
            "target": source_path(target),
        }
        if anomaly_ratio is not None:  # this call only; the parameters written include it
            settings = replace(settings, anomaly_ratio=anomaly_ratio)
            params["anomaly_ratio"] = anomaly_ratio
        result = self._evaluate(target, settings, batch_key, layer)
        main = parallel.context().is_main
        if main:
            contract.write_scores(
                target,
                result,
                params,
                backend=ops.backend(self.device),
                timings={**self.timings_, **result.timings},
                key_added=key_added,
            )
            target.uns[key_added]["device"] = str(self.device)
        timings: dict[str, float] = {}
        history = {f"module I {stage}": epochs for stage, epochs in self.history_.items()}
        history |= result.history
        if correct:
            corrected = self.correct(
                target,
                reference,
                normal=~result.anomaly,
                batch_key=batch_key,
                kin=kin,
                out=corrected_out,
                timings=timings,
                checkpoint=checkpoint,
                layer=layer,
                history=history,
                batch_scale=result.batch_scale,
            )
            if main and corrected_out is None:
                contract.write_corrected(target, corrected, self.genes_, key_added)
        x = None
        if main and correct and corrected_out is not None:
            x = np.asarray(corrected_out[np.flatnonzero(result.anomaly)], dtype=np.float32)
        elif main:
            x = contract.corrected_expression(
                target, self.genes_, key_added, np.flatnonzero(result.anomaly), layer=layer
            )
        # every rank clusters the anomalies (DESC trains on each rank's shard of them)
        subtypes = self.subtype(
            parallel.broadcast_array(x, parallel.context()), n_subtypes=n_subtypes, timings=timings
        )
        if main:
            contract.write_subtypes(target, result.anomaly, subtypes, key_added)
            add_timings(target, key_added, timings)
            history["subtype desc"] = [] if subtypes is None else subtypes.history
            add_history(target, key_added, history)
        return target

    def __repr__(self) -> str:
        state = f"fitted on {len(self.genes_)} genes" if self.is_fitted else "not fitted"
        return f"ACsleuth(score={self.params['score']!r}, device={self.device.type!r}, {state})"


__all__ = ["ACsleuth"]
