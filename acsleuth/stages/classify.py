"""CLAMS: a cell-type classifier with an energy-based out-of-distribution score (docs/method.md §8.1).

The computation behind :class:`~acsleuth.CellTypeClassifier`: reading the labels, the
stratified validation split, the per-gene standardisation, JEM training with the best
validation checkpoint, the temperature (cross-fitted on out-of-fold training cells while the
validation cells are few; the cross-fitted networks then also vote on p(y|x)) and the OOD
threshold. Streamed prediction is in :mod:`.classify_predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from torch import Tensor

from .. import metrics
from .._constants import N_NEIGHBOURS
from ..data import ExpressionSource, MinibatchLoader
from ..nn.ebm import EnergyClassifier
from ..train import Checkpoint
from ..train.jem import JEMConfig, JEMResult, train_jem
from .classify_ood import OODIndex, OODScore, calibrate, fit_ood_index, term_weights
from .classify_predict import Predicted, combined_score, predict_logits, summarise

MIN_CELLS_PER_TYPE = 2


@dataclass(frozen=True)
class ClassifierConfig:
    """Every default of the classifier (one home): network, split, OOD call and training."""

    n_top_genes: int = 3000
    # the backbone, tuned on held-out T Reg / CD14+ Monocyte / CD19+ B of pbmc68k_reduced
    # (benchmarks/RESULTS.md); the authors' earlier code used (800, 200) x (2, 4) blocks
    widths: tuple[int, ...] = (256,)
    blocks: tuple[int, ...] = (1,)
    dropout: float = 0.5
    max_value: float | None = 10.0  # clip standardised inputs to [-max_value, max_value]
    validation_fraction: float = 0.1
    ood_quantile: float = 0.95  # the OOD threshold: this quantile of the validation cells' scores
    # the OOD score: "energy" (CLAMS' -LSE) or, deliberate deviations (docs/method.md §8.1),
    # "energy+knn" (+ the distance to the training cells in knn_components PCs),
    # "energy+softmax+knn" (+ the negative max softmax too) and "energy+softmax+knn+type"
    # (+ the distance to the predicted type's cells in units of its spread), the terms
    # weighted as in classify_ood.TERM_WEIGHTS (chosen on the development types of
    # benchmarks/RESULTS.md)
    ood_score: OODScore = "energy+softmax+knn+type"
    knn_k: int = N_NEIGHBOURS
    type_k: int = 20  # neighbours of the type distance (chosen with its weight, RESULTS.md)
    knn_components: int = 200
    knn_weight: float | None = None  # the distance's weight; None: the score's own
    knn_cells: int = 20_000  # training cells indexed (a seeded sample of a larger reference)
    calibrate: bool = True  # fit a softmax temperature (p(y|x) only), see calibration_folds
    # while the validation cells are fewer than calibration_cells, the temperature is fitted on
    # them plus out-of-fold logits of every training cell, from calibration_folds networks each
    # trained on the other folds (docs/method.md §8.1: ~30 validation cells fix it loosely)
    calibration_folds: int = 5
    calibration_cells: int = 1000
    # while cross-fitted, p(y|x) is the softmax of the mean logits of the kept and the
    # cross-fitted networks (they are trained anyway; their mean calibrates better); the OOD
    # score stays the kept network's, on whose terms its weights were chosen
    ensemble: bool = True
    eval_batch_size: int = 4096
    training: JEMConfig = field(default_factory=JEMConfig)

    def network(self, n_genes: int, n_classes: int) -> EnergyClassifier:
        return EnergyClassifier(
            n_genes,
            n_classes,
            widths=self.widths,
            blocks=self.blocks,
            dropout=self.dropout,
            max_value=self.max_value,
        )


@dataclass
class Fitted:
    """A trained classifier and what its validation cells say about it."""

    network: EnergyClassifier
    training: JEMResult
    validation_accuracy: float
    validation_ece: float
    validation_ece_uncalibrated: float  # at temperature 1
    threshold: float
    temperature: float
    index: OODIndex | None  # the index-based scores'; None for "energy"
    calibration_divergences: int  # epochs the guard restored in the cross-fitted networks
    members: list[EnergyClassifier]  # the cross-fitted networks p(y|x) averages (ensemble)


@dataclass
class CrossFit:
    """Out-of-fold logits of training cells, for the temperature, and the networks."""

    logits: np.ndarray
    truth: np.ndarray
    divergences: int
    networks: list[EnergyClassifier]


@dataclass
class Validation:
    """The validation cells' predictions (the kept network's and the ensemble's), their
    labels, and the out-of-fold logits of the training cells when cross-fitted."""

    predicted: Predicted
    truth: np.ndarray
    cross_fit: CrossFit | None


def reference_labels(adata: AnnData, label_key: str) -> tuple[np.ndarray, list[str]]:
    """``(codes, classes)``: int64 codes of ``adata.obs[label_key]`` into the sorted class names.

    Raises a one-line error for a missing column, missing labels, a single type, or a type
    with fewer than two cells.
    """
    if label_key not in adata.obs:
        raise KeyError(
            f"reference: label_key {label_key!r} is not an obs column (columns: "
            f"{list(adata.obs.columns)}); pass the column holding the cell types"
        )
    labels = adata.obs[label_key]
    missing = int(labels.isna().sum())
    if missing == len(labels):
        raise ValueError(
            f"reference: obs[{label_key!r}] holds no label; the classifier needs labelled cells"
        )
    if missing:
        raise ValueError(
            f"reference: {missing} cell(s) have no label in obs[{label_key!r}]; label them or drop them "
            "(e.g. reference[reference.obs[label_key].notna()])"
        )
    counts = labels.astype(str).value_counts()
    if len(counts) < 2:
        raise ValueError(
            f"reference: obs[{label_key!r}] has one type ({counts.index[0]!r}); a classifier needs two or more"
        )
    few = counts[counts < MIN_CELLS_PER_TYPE]
    if len(few):
        raise ValueError(
            f"reference: type(s) {list(few.index)} of obs[{label_key!r}] have fewer than "
            f"{MIN_CELLS_PER_TYPE} cells; drop or merge them"
        )
    classes = sorted(counts.index)
    codes = pd.Categorical(labels.astype(str), categories=classes).codes.astype(np.int64)
    return codes, classes


def validation_split(
    codes: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_rows, validation_rows)``: ``round(fraction * n)`` cells of each type
    (at most ``n - 1``) are drawn for validation."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for code in np.unique(codes):
        cells = rng.permutation(np.flatnonzero(codes == code))
        n_val = min(round(fraction * cells.size), cells.size - 1)
        validation.append(cells[:n_val])
        train.append(cells[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def stratified_folds(codes: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """``(n,)`` fold of each cell in ``0 .. n_folds - 1``: every type's cells, in a seeded
    random order, are dealt round the folds."""
    rng = np.random.default_rng([seed, n_folds])
    folds = np.empty(codes.size, dtype=np.int64)
    for code in np.unique(codes):
        cells = rng.permutation(np.flatnonzero(codes == code))
        folds[cells] = np.arange(cells.size) % n_folds
    return folds


def gene_moments(
    source: ExpressionSource, rows: np.ndarray, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Per-gene mean and standard deviation over ``rows``, streamed in float64."""
    total = np.zeros(source.n_genes)
    squares = np.zeros(source.n_genes)
    loader = MinibatchLoader(source, batch_size=batch_size, resident_bytes=0, rows=rows)
    for _, x in loader:
        block = x.double().numpy()
        total += block.sum(0)
        squares += (block**2).sum(0)
    mean = total / rows.size
    std = np.sqrt(np.maximum(squares / rows.size - mean**2, 0.0))
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def index_training_cells(
    network: EnergyClassifier,
    source: ExpressionSource,
    codes: np.ndarray,
    n_classes: int,
    train_rows: np.ndarray,
    config: ClassifierConfig,
    *,
    seed: int,
    device: torch.device,
) -> OODIndex:
    """The OOD index of (at most ``knn_cells``, a seeded sample of) the training cells,
    standardised as the network sees them, with their types ``codes[rows]``."""
    rng = np.random.default_rng(seed)
    rows = train_rows
    if rows.size > config.knn_cells:
        rows = np.sort(rng.choice(rows, config.knn_cells, replace=False))
    loader = MinibatchLoader(
        source, batch_size=config.eval_batch_size, device=device, resident_bytes=0, rows=rows
    )
    with torch.inference_mode():
        z = torch.cat([network.standardise(x) for _, x in loader])
    return fit_ood_index(
        z,
        n_components=config.knn_components,
        k=config.knn_k,
        weights=term_weights(config.ood_score, config.knn_weight),
        codes=torch.as_tensor(codes[rows], device=z.device),
        n_types=n_classes,
        type_k=config.type_k,
    )


def out_of_fold_logits(
    source: ExpressionSource,
    codes: np.ndarray,
    n_classes: int,
    train_rows: np.ndarray,
    config: ClassifierConfig,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
) -> CrossFit:
    """Logits of every training cell from a network trained, for ``epochs`` epochs (the kept
    network's), on the other ``config.calibration_folds`` - 1 stratified folds."""
    folds = stratified_folds(codes[train_rows], config.calibration_folds, seed)
    training = replace(config.training, epochs=epochs)
    logits = np.full((train_rows.size, n_classes), np.nan, dtype=np.float32)
    divergences, networks = 0, []
    for fold in range(config.calibration_folds):
        held = folds == fold
        if not held.any() or held.all():  # no cell to score, or none to train on
            continue
        network, result = train_network(
            source,
            codes,
            n_classes,
            train_rows[~held],
            config,
            training,
            seed=seed + 1 + fold,
            device=device,
        )
        logits[held] = predict_logits(
            network, source, batch_size=config.eval_batch_size, device=device, rows=train_rows[held]
        ).logits
        divergences += result.divergences
        networks.append(network)
    scored = ~np.isnan(logits).any(1)
    return CrossFit(logits[scored], codes[train_rows][scored], divergences, networks)


TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 93))


def fit_temperature(logits: np.ndarray, codes: np.ndarray) -> float:
    """The softmax temperature (a grid over [0.1, 10]) of least cross-entropy on ``logits``."""
    t, y = torch.from_numpy(logits), torch.as_tensor(codes)
    nll = [float(torch.nn.functional.cross_entropy(t / float(temp), y)) for temp in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def train_network(
    source: ExpressionSource,
    codes: np.ndarray,
    n_classes: int,
    rows: np.ndarray,
    config: ClassifierConfig,
    training: JEMConfig,
    *,
    seed: int,
    device: torch.device,
    validation_rows: np.ndarray | None = None,
    verbose: bool = False,
    checkpoint: Checkpoint | None = None,
) -> tuple[EnergyClassifier, JEMResult]:
    """A network trained on the cells ``rows``, standardised on them; with ``validation_rows``
    its best-validation (accuracy, -NLL) epoch is kept, without them its last."""
    network = config.network(source.n_genes, n_classes).to(device)
    mean, std = gene_moments(source, rows, config.eval_batch_size)
    network.set_standardisation(mean.to(device), std.to(device))
    loader = MinibatchLoader(
        source,
        batch_size=min(training.batch_size, rows.size),
        shuffle=True,
        drop_last=True,
        seed=seed,
        device=device,
        rows=rows,
    )
    validate = None
    if validation_rows is not None:
        truth = torch.as_tensor(codes[validation_rows])

        def validate() -> tuple[float, float]:
            logits = predict_logits(
                network,
                source,
                batch_size=config.eval_batch_size,
                device=device,
                rows=validation_rows,
            ).logits
            logits = torch.from_numpy(logits)
            accuracy = float((logits.argmax(1) == truth).float().mean())
            return accuracy, -float(torch.nn.functional.cross_entropy(logits, truth))

    start = None
    if training.sgld_start == "data":

        def start(n: int) -> Tensor:  # training cells, standardised; torch's generator picks them
            picks = torch.randint(0, rows.size, (n,)).numpy()
            return network.standardise(loader.take(rows[picks]))

    result = train_jem(
        network,
        loader,
        torch.as_tensor(codes, device=device),
        validate,
        training,
        seed=seed,
        verbose=verbose,
        state={"loader": loader},
        checkpoint=checkpoint,
        start=start,
    )
    return network, result


def fit_classifier(
    source: ExpressionSource,
    codes: np.ndarray,
    n_classes: int,
    config: ClassifierConfig,
    *,
    seed: int,
    device: torch.device,
    verbose: bool = True,
    checkpoint: Checkpoint | None = None,
) -> Fitted:
    """Train the energy classifier on ``source`` (labels ``codes``); torch must be seeded."""
    train_rows, val_rows = validation_split(codes, config.validation_fraction, seed)
    if val_rows.size == 0:
        raise ValueError(
            f"reference: {codes.size} cells leave no validation cell at validation_fraction="
            f"{config.validation_fraction}; raise it or give more cells"
        )
    network, result = train_network(
        source,
        codes,
        n_classes,
        train_rows,
        config,
        config.training,
        seed=seed,
        device=device,
        validation_rows=val_rows,
        verbose=verbose,
        checkpoint=checkpoint,
    )
    cross_fit = None
    if (
        config.calibrate
        and config.calibration_folds > 1
        and val_rows.size < config.calibration_cells
    ):
        cross_fit = out_of_fold_logits(
            source,
            codes,
            n_classes,
            train_rows,
            config,
            epochs=result.best_epoch + 1,
            seed=seed,
            device=device,
        )
    index = None
    if config.ood_score != "energy":
        index = index_training_cells(
            network, source, codes, n_classes, train_rows, config, seed=seed, device=device
        )
    members = cross_fit.networks if config.ensemble and cross_fit is not None else []
    predicted = predict_logits(
        network,
        source,
        batch_size=config.eval_batch_size,
        device=device,
        rows=val_rows,
        index=index,
        members=members,
    )
    validation = Validation(predicted, codes[val_rows], cross_fit)
    return _validated(network, result, validation, index, members, config)


def _validated(
    network: EnergyClassifier,
    result: JEMResult,
    validation: Validation,
    index: OODIndex | None,
    members: list[EnergyClassifier],
    config: ClassifierConfig,
) -> Fitted:
    """What the validation cells say: the temperature (the kept network's, with the
    out-of-fold training cells when cross-fitted), the accuracy and ECE of p(y|x) (before and
    after it), the index's moments and the OOD threshold (both the kept network's)."""
    logits, truth, cross_fit = validation.predicted.logits, validation.truth, validation.cross_fit
    temperature = 1.0
    if config.calibrate:
        pooled = (
            (logits, truth)
            if cross_fit is None
            else (
                np.concatenate([logits, cross_fit.logits]),
                np.concatenate([truth, cross_fit.truth]),
            )
        )
        temperature = fit_temperature(*pooled)
    proba, confidence, _ = summarise(validation.predicted.voted, temperature)
    _, raw_confidence, _ = summarise(validation.predicted.voted)
    correct = proba.argmax(1) == truth
    _, kept_confidence, energy = summarise(logits, temperature)
    predicted = validation.predicted
    if index is not None:
        calibrate(index, energy, kept_confidence, predicted.distance, predicted.type_distance)
    score = combined_score(energy, kept_confidence, predicted, index)
    return Fitted(
        network,
        result,
        float(correct.mean()),
        metrics.ece(correct, confidence),
        metrics.ece(correct, raw_confidence),
        float(np.quantile(score, config.ood_quantile)),
        temperature,
        index,
        0 if cross_fit is None else cross_fit.divergences,
        members,
    )
