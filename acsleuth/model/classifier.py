"""The user-facing CLAMS classifier: ``CellTypeClassifier().fit(reference, label_key=...)``,
then predict types, probabilities and an out-of-distribution score for target cells."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anndata import AnnData

from .._atomic import atomic_dir
from .._constants import SEED
from .._device import resolve_device
from .._logging import logger, stage_timer
from ..data import DataError, ExpressionSource, highly_variable_genes, prepare, read
from ..nn.ebm import EnergyClassifier
from ..stages.classify import ClassifierConfig, fit_classifier, reference_labels
from ..stages.classify_ood import OOD_SCORES, OODIndex
from ..stages.classify_predict import combined_score, predict_logits, summarise
from ..train import Checkpoint
from ..train.checkpoint import fingerprint
from ..train.jem import JEMConfig
from ..train.sgld import CLIPS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
INDEX_FILE = "ood_index.pt"  # the index-based scores' training-cell index
MEMBERS_FILE = "members.pt"  # the ensemble's cross-fitted networks (state dicts), if any


def make_config(**settings: Any) -> ClassifierConfig:
    """A :class:`ClassifierConfig` with ``settings`` replacing defaults; names of
    :class:`~acsleuth.train.jem.JEMConfig` fields (``epochs``, ``clip``, ``p_on``, ...) go to
    its ``training``. Unknown names and out-of-range values are refused in one line."""
    top = {f.name for f in dataclasses.fields(ClassifierConfig)} - {"training"}
    inner = {f.name for f in dataclasses.fields(JEMConfig)}
    unknown = sorted(set(settings) - top - inner)
    if unknown:
        raise TypeError(
            f"CellTypeClassifier: unknown setting(s) {unknown}; valid: {sorted(top | inner)}"
        )
    tuples = {k: tuple(v) for k, v in settings.items() if isinstance(v, list)}
    settings = {**settings, **tuples}
    training = JEMConfig(**{k: v for k, v in settings.items() if k in inner})
    config = ClassifierConfig(**{k: v for k, v in settings.items() if k in top}, training=training)
    _check(config)
    return config


def _check(config: ClassifierConfig) -> None:
    t = config.training
    for name, value in (
        ("epochs", t.epochs),
        ("batch_size", t.batch_size),
        ("n_top_genes", config.n_top_genes),
        ("eval_batch_size", config.eval_batch_size),
        ("buffer_size", t.buffer_size),
        ("knn_k", config.knn_k),
        ("type_k", config.type_k),
        ("knn_components", config.knn_components),
        ("knn_cells", config.knn_cells),
    ):
        if int(value) < 1:
            raise ValueError(f"CellTypeClassifier: {name} must be a positive integer, got {value}")
    for name, value in (
        ("calibration_folds", config.calibration_folds),
        ("calibration_cells", config.calibration_cells),
    ):
        if int(value) < 0:
            raise ValueError(f"CellTypeClassifier: {name} must be >= 0 (0: off), got {value}")
    if config.ood_score not in OOD_SCORES:
        raise ValueError(
            f"CellTypeClassifier: ood_score must be one of {OOD_SCORES}, got {config.ood_score!r}"
        )
    if config.knn_weight is not None and not config.knn_weight >= 0.0:
        raise ValueError(f"CellTypeClassifier: knn_weight must be >= 0, got {config.knn_weight}")
    if t.clip not in CLIPS:
        raise ValueError(f"CellTypeClassifier: clip must be one of {CLIPS}, got {t.clip!r}")
    if not 0.0 < t.p_on <= 1.0:
        raise ValueError(f"CellTypeClassifier: p_on must be in (0, 1], got {t.p_on}")
    if not 0.0 < config.validation_fraction < 1.0:
        raise ValueError(
            f"CellTypeClassifier: validation_fraction must be in (0, 1), got {config.validation_fraction}"
        )
    if not 0.0 < config.ood_quantile < 1.0:
        raise ValueError(
            f"CellTypeClassifier: ood_quantile must be in (0, 1), got {config.ood_quantile}"
        )


@dataclass
class Classification:
    """One prediction pass over target cells (a row per cell)."""

    labels: np.ndarray  # predicted type names
    proba: np.ndarray  # (n, K) p(y|x) (the ensemble's, see ``members_``), in ``classes_`` order
    confidence: np.ndarray  # max p(y|x)
    ood_score: np.ndarray  # the configured score (``ood_score``): higher = more OOD
    energy: np.ndarray  # -LSE(x) of the kept network, CLAMS' energy: higher = more OOD
    ood: np.ndarray  # ood_score > threshold_
    timings: dict[str, float] = field(default_factory=dict)


class CellTypeClassifier:
    """CLAMS (docs/method.md §8.1): a cell-type classifier trained as a JEM with ELU-clipped, gated
    generative loss; its energy ``-LSE(x)`` scores cells of no known type.

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    random_state
        Seed of every random choice (split, weights, minibatches, SGLD, gate).
    verbose
        Progress bars.
    **settings
        Fields of :class:`~acsleuth.stages.classify.ClassifierConfig` (``n_top_genes``,
        ``widths``, ``blocks``, ``dropout``, ``validation_fraction``, ``ood_quantile``,
        ``calibration_folds``, ``eval_batch_size``) and of :class:`~acsleuth.train.jem.JEMConfig` (``epochs``,
        ``batch_size``, ``lr``, ``clip``, ``p_on``, ``sgld_steps``, ``buffer_size``, ...,
        and ``generative=False`` for a plain cross-entropy classifier); defaults live there.

    Attributes (after :meth:`fit`)
    ------------------------------
    classes_, genes_
        The types (sorted) and the gene panel.
    temperature_
        The softmax temperature of least NLL (``calibrate``; 1 without) on the validation
        cells and, while they are fewer than ``calibration_cells``, the out-of-fold logits of
        every training cell from ``calibration_folds`` networks trained on the other folds.
    members_
        The ``calibration_folds`` cross-fitted networks when they were trained and
        ``ensemble`` is on: p(y|x) is then the softmax of the mean logits of the kept network
        and these (the OOD score stays the kept network's); empty otherwise.
    index_
        The training-cell index of the index-based OOD scores (None for ``"energy"``).
    threshold_
        The OOD call: cells scoring above the ``ood_quantile`` of the validation cells' scores.
    validation_accuracy_, validation_ece_, validation_ece_uncalibrated_
        On the held-back ``validation_fraction`` of the reference (stratified); the ECE with
        the fitted temperature, and at temperature 1.
    divergences_
        Epochs the divergence guard restored (the cross-fitted networks' included).
    """

    def __init__(
        self,
        *,
        device: str = "auto",
        random_state: int = SEED,
        verbose: bool = True,
        **settings: Any,
    ) -> None:
        self.config = make_config(**settings)
        self.settings = settings
        self.device = resolve_device(device)
        self.random_state = int(random_state)
        self.verbose = verbose
        self.network_ = None
        self.members_: list[EnergyClassifier] = []
        self.classes_: list[str] | None = None
        self.genes_: list[str] | None = None
        self.threshold_ = self.validation_accuracy_ = self.validation_ece_ = float("nan")
        self.validation_ece_uncalibrated_ = float("nan")
        self.index_: OODIndex | None = None
        self.temperature_ = 1.0
        self.divergences_ = 0
        self.best_epoch_ = -1
        self.history_: list[dict[str, float]] = []
        self.timings_: dict[str, float] = {}

    @property
    def params(self) -> dict[str, Any]:
        """Every setting in effect (the config flattened) with the seed."""
        config = dataclasses.asdict(self.config)
        return {**config.pop("training"), **config, "random_state": self.random_state}

    @property
    def is_fitted(self) -> bool:
        return self.network_ is not None

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.random_state)
            yield

    def fit(
        self,
        reference: AnnData | str | os.PathLike,
        *,
        label_key: str,
        layer: str | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> CellTypeClassifier:
        """Train on the labelled ``reference`` (AnnData, backed AnnData or a path).

        ``label_key`` names the ``obs`` column of cell types; ``layer`` reads
        ``layers[layer]`` instead of ``X`` (e.g. batch-corrected expression). With a
        :class:`~acsleuth.train.Checkpoint` the training state is written every
        ``checkpoint.every`` epochs, at the end and on Ctrl-C, and an interrupted fit resumed
        from it ends with the weights of an uninterrupted one (on the CPU).
        """
        if checkpoint is not None:
            checkpoint.bind(
                fingerprint({**self.params, "label_key": label_key}, reference=reference)
            )
        timings: dict[str, float] = {}
        with stage_timer(timings, "prepare data"):
            try:
                adata = read(reference, backed=True)
            except DataError as err:
                raise DataError(f"reference: {err}") from err
            codes, classes = reference_labels(adata, label_key)  # before reading any expression
            source = prepare(adata, name="reference", layer=layer)
            genes = highly_variable_genes(source, self.config.n_top_genes, seed=self.random_state)
            source = source.with_genes(genes)
        with self._seeded(), stage_timer(timings, "train"):
            fitted = fit_classifier(
                source,
                codes,
                len(classes),
                self.config,
                seed=self.random_state,
                device=self.device,
                verbose=self.verbose,
                checkpoint=checkpoint,
            )
        self.network_, self.classes_, self.genes_ = fitted.network, classes, genes
        self.members_ = fitted.members
        self.threshold_, self.temperature_ = fitted.threshold, fitted.temperature
        self.index_ = fitted.index
        self.validation_ece_uncalibrated_ = fitted.validation_ece_uncalibrated
        self.validation_accuracy_, self.validation_ece_ = (
            fitted.validation_accuracy,
            fitted.validation_ece,
        )
        self.divergences_, self.best_epoch_ = (
            fitted.training.divergences + fitted.calibration_divergences,
            fitted.training.best_epoch,
        )
        self.history_, self.timings_ = fitted.training.history, timings
        logger.info(
            "classifier: %d types, validation accuracy %.3f, ECE %.3f",
            len(classes),
            self.validation_accuracy_,
            self.validation_ece_,
        )
        return self

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                "CellTypeClassifier: call fit(reference, label_key=...) (or load) first"
            )

    def _source(
        self, target: AnnData | str | os.PathLike | ExpressionSource, layer: str | None
    ) -> ExpressionSource:
        if isinstance(target, ExpressionSource):
            return target.with_genes(self.genes_)
        return prepare(target, genes=self.genes_, name="target", layer=layer)

    def classify(
        self, target: AnnData | str | os.PathLike, *, layer: str | None = None
    ) -> Classification:
        """Types, probabilities, confidence, OOD score and call of every target cell, streamed
        in batches of ``eval_batch_size`` cells."""
        self._require_fitted()
        timings: dict[str, float] = {}
        with stage_timer(timings, "predict"):
            predicted = predict_logits(
                self.network_,
                self._source(target, layer),
                batch_size=self.config.eval_batch_size,
                device=self.device,
                index=self.index_,
                members=self.members_,
            )
            proba, confidence, _ = summarise(predicted.voted, self.temperature_)
            _, kept_confidence, energy = summarise(predicted.logits, self.temperature_)
            score = combined_score(energy, kept_confidence, predicted, self.index_)
        labels = np.asarray(self.classes_, dtype=object)[proba.argmax(1)]
        ood = score > self.threshold_
        return Classification(labels, proba, confidence, score, energy, ood, timings)

    def predict(
        self, target: AnnData | str | os.PathLike, *, layer: str | None = None
    ) -> np.ndarray:
        """The most probable type of each cell."""
        return self.classify(target, layer=layer).labels

    def predict_proba(
        self, target: AnnData | str | os.PathLike, *, layer: str | None = None
    ) -> np.ndarray:
        """``(n, K)`` p(y|x), columns in ``classes_`` order."""
        return self.classify(target, layer=layer).proba

    def score_samples(
        self, target: AnnData | str | os.PathLike, *, layer: str | None = None
    ) -> np.ndarray:
        """The OOD score (``ood_score``: ``"energy+softmax+knn+type"``, ``"energy+softmax+knn"``,
        ``"energy+knn"`` or ``"energy"``, ``-LSE(x)``): higher = more out of distribution."""
        return self.classify(target, layer=layer).ood_score

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``config.json``, ``weights.pt`` (and ``ood_index.pt``) into ``path`` (refused if it exists,
        unless ``overwrite``); written under a temporary name and renamed."""
        from .. import __version__

        self._require_fitted()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            config = {
                "format": 1,
                "kind": "CellTypeClassifier",
                "acsleuth_version": __version__,
                "settings": dataclasses.asdict(self.config),
                "random_state": self.random_state,
                "classes": self.classes_,
                "genes": self.genes_,
                "threshold": self.threshold_,
                "temperature": self.temperature_,
                "validation_accuracy": self.validation_accuracy_,
                "validation_ece": self.validation_ece_,
                "validation_ece_uncalibrated": self.validation_ece_uncalibrated_,
                "divergences": self.divergences_,
                "best_epoch": self.best_epoch_,
                "history": self.history_,
                "timings": self.timings_,
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
            torch.save(self.network_.state_dict(), tmp / WEIGHTS_FILE)
            if self.index_ is not None:
                torch.save(self.index_.state_dict(), tmp / INDEX_FILE)
            if self.members_:
                torch.save([m.state_dict() for m in self.members_], tmp / MEMBERS_FILE)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto") -> CellTypeClassifier:
        """A classifier written by :meth:`save`."""
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path} is not a saved CellTypeClassifier: {name} is missing"
                )
        saved = json.loads((path / CONFIG_FILE).read_text())
        if saved.get("kind") != "CellTypeClassifier":
            raise ValueError(
                f"{path} holds a saved {saved.get('kind', 'ACsleuth')} model, not a CellTypeClassifier"
            )
        settings = dict(saved["settings"])
        settings.update(settings.pop("training"))
        settings.setdefault("ood_score", "energy")  # saved before "energy+knn" existed
        model = cls(device=device, random_state=saved["random_state"], verbose=False, **settings)
        model.classes_, model.genes_ = list(saved["classes"]), list(saved["genes"])
        model.network_ = model.config.network(len(model.genes_), len(model.classes_)).to(
            model.device
        )
        model.network_.load_state_dict(
            torch.load(path / WEIGHTS_FILE, map_location=model.device, weights_only=True)
        )
        model.network_.eval()
        if (path / MEMBERS_FILE).is_file():  # absent in saves without an ensemble
            for state in torch.load(
                path / MEMBERS_FILE, map_location=model.device, weights_only=True
            ):
                member = model.config.network(len(model.genes_), len(model.classes_))
                member.load_state_dict(state)
                model.members_.append(member.to(model.device).eval())
        if model.config.ood_score != "energy":
            if not (path / INDEX_FILE).is_file():
                raise FileNotFoundError(
                    f"{path} is not a saved CellTypeClassifier: {INDEX_FILE} is missing"
                )
            state = torch.load(path / INDEX_FILE, map_location=model.device, weights_only=True)
            model.index_ = OODIndex.from_state_dict(state)
        model.validation_ece_uncalibrated_ = saved.get("validation_ece_uncalibrated", float("nan"))
        model.threshold_, model.temperature_ = (
            float(saved["threshold"]),
            float(saved["temperature"]),
        )
        model.validation_accuracy_, model.validation_ece_ = (
            saved["validation_accuracy"],
            saved["validation_ece"],
        )
        model.divergences_, model.best_epoch_ = int(saved["divergences"]), int(saved["best_epoch"])
        model.history_, model.timings_ = saved["history"], saved["timings"]
        return model

    def __repr__(self) -> str:
        state = (
            f"fitted on {len(self.classes_)} types x {len(self.genes_)} genes"
            if self.is_fitted
            else "not fitted"
        )
        return f"CellTypeClassifier(clip={self.config.training.clip!r}, {state})"
