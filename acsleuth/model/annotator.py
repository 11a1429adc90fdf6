"""``OpenWorldAnnotator``: label known types, cluster unseen ones (scDET, docs/method.md §8.2)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._seed import seeded
from ..data import DataError, MinibatchLoader, highly_variable_genes, prepare
from ..data.source import ExpressionSource
from ..nn.annotator import AnnotatorNet
from ..stages import annotate as stage
from ..train import Checkpoint
from ..train.checkpoint import fingerprint
from ..train.contrastive import OpenWorldConfig, train_open_world

MODEL_FILE = "annotator.pt"
META_FILE = "annotator.json"


@dataclass
class Annotation:
    """What :meth:`OpenWorldAnnotator.predict` returns for the target's cells (in order)."""

    label: pd.Categorical  # seen type name or "novel_i"
    novel: np.ndarray  # bool
    confidence: np.ndarray  # max class probability
    proba: np.ndarray  # (cells, K), columns in the order of ``classes``
    features: np.ndarray  # (cells, 128) embedding
    classes: list[str]


def reference_labels(reference: AnnData, label_key: str) -> tuple[np.ndarray, list[str]]:
    """Integer class of every reference cell and the type names (categories order, else sorted)."""
    if label_key not in reference.obs:
        raise DataError(
            f"reference: no obs column {label_key!r}; available: {list(reference.obs.columns)} "
            "(pass the column holding the cell types as label_key)"
        )
    column = reference.obs[label_key]
    if column.isna().any():
        raise DataError(
            f"reference: obs[{label_key!r}] has {int(column.isna().sum())} missing labels; drop "
            "those cells or label them"
        )
    present = set(column.astype(str))
    if isinstance(column.dtype, pd.CategoricalDtype):
        types = [str(c) for c in column.cat.categories if str(c) in present]
    else:
        types = sorted(present)
    codes = pd.Categorical(column.astype(str), categories=types).codes.astype(np.int64)
    return codes, types


def check_n_types(n_types: int | Literal["auto"], n_seen: int) -> None:
    """Refuse a number of types below the number of reference types, in one line."""
    if n_types == "auto":
        return
    if isinstance(n_types, bool) or not isinstance(n_types, (int, np.integer)):
        raise ValueError(f"n_types must be an integer or 'auto', got {n_types!r}")
    if n_types < n_seen:
        raise ValueError(
            f"n_types={n_types} is below the {n_seen} cell types of the reference; pass at least "
            f"{n_seen} (reference types + expected novel types) or n_types='auto'"
        )


class OpenWorldAnnotator:
    """Open-world cell-type annotation of a long-tailed target (scDET, docs/method.md §8.2).

    Parameters
    ----------
    n_types
        K, the number of types in reference and target (>= the reference's types), or ``"auto"``
        (estimated by :func:`acsleuth.stages.annotate.estimate_n_types`).
    config
        Settings; :class:`~acsleuth.train.contrastive.OpenWorldConfig` defaults when None.
    seed
        Seeds the network, the augmentation, the loaders and k-means.
    device
        Torch device.
    """

    def __init__(
        self,
        n_types: int | Literal["auto"],
        *,
        config: OpenWorldConfig | None = None,
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
    ) -> None:
        if n_types != "auto":
            check_n_types(n_types, 1)
        self.n_types = n_types
        self.config = config or OpenWorldConfig()
        self.seed = int(seed)
        self.device = torch.device(device)
        self.verbose = verbose
        self.net: AnnotatorNet | None = None
        self.genes: list[str] = []
        self.seen: list[str] = []
        self.classes: list[str] = []
        self.priors: list[np.ndarray] = []
        self.history: list[dict[str, float]] = []
        self.timings: dict[str, float] = {}
        self.auto_scores: dict[int, float] = {}
        self.n_types_ = 0

    def _loader(self, source: ExpressionSource, *, train: bool, offset: int) -> MinibatchLoader:
        bs = self.config.batch_size
        return MinibatchLoader(
            source,
            batch_size=bs,
            shuffle=train,
            device=self.device,
            drop_last=train and source.n_obs > bs,
            seed=self.seed + offset,
        )

    def fit(
        self,
        reference: AnnData,
        target: AnnData,
        *,
        label_key: str,
        checkpoint: Checkpoint | None = None,
    ) -> OpenWorldAnnotator:
        """Train on the labelled ``reference`` and unlabelled ``target`` (neither is modified).

        With a :class:`~acsleuth.train.Checkpoint` the training state is written every
        ``checkpoint.every`` epochs, at the end and on Ctrl-C (which then raises
        :class:`~acsleuth.train.TrainingInterrupted`); fitting again with the checkpoint
        opened with ``resume=True`` continues the run, on the CPU to the same weights as an
        uninterrupted one. Resuming with other inputs or settings is refused.
        """
        start = time.perf_counter()
        codes, self.seen = reference_labels(reference, label_key)
        check_n_types(self.n_types, len(self.seen))
        if checkpoint is not None:
            params = {"n_types": self.n_types, "seed": self.seed, "label_key": label_key}
            checkpoint.bind(
                fingerprint({**params, **self.settings()}, reference=reference, target=target)
            )
        ref_src = prepare(reference, name="reference")
        self.genes = highly_variable_genes(ref_src, self.config.n_top_genes)
        ref_src = ref_src.with_genes(self.genes)
        tgt_src = prepare(target, genes=self.genes, name="target")
        ref_eval = self._loader(ref_src, train=False, offset=0)
        tgt_eval = self._loader(tgt_src, train=False, offset=0)
        k = self.n_types
        if k == "auto":
            k, self.auto_scores = stage.estimate_n_types(
                ref_eval, tgt_eval, len(self.seen), seed=self.seed
            )
        self.n_types_ = int(k)
        if self.n_types_ > tgt_src.n_obs + ref_src.n_obs:
            raise ValueError(f"n_types={k} exceeds the number of cells; lower it")
        labels = np.concatenate([codes, np.full(tgt_src.n_obs, -1)])

        with seeded(self.seed, self.device):
            net = AnnotatorNet(len(self.genes), self.n_types_).to(self.device)

            def estimate_prior(epoch: int) -> torch.Tensor:
                pairs = [stage.contrastive_features(net, ld) for ld in (ref_eval, tgt_eval)]
                proj, feats = (torch.cat(part) for part in zip(*pairs, strict=True))
                clusters, _ = stage.kmeans(
                    proj,
                    self.n_types_,
                    n_iter=self.config.kmeans_iter,
                    n_init=self.config.kmeans_init,
                    seed=self.seed + epoch // self.config.estimate_every,
                )
                clusters = clusters.numpy()
                mapping = stage.match_clusters(clusters, labels, len(self.seen), self.n_types_)
                if self.config.seed_prototypes:
                    stage.seed_novel_prototypes(net, feats, clusters, mapping, len(self.seen))
                return torch.as_tensor(
                    stage.prior_from_clusters(clusters, mapping), dtype=torch.float32
                )

            self.history, self.priors = train_open_world(
                net,
                self._loader(ref_src, train=True, offset=1),
                codes,
                self._loader(tgt_src, train=True, offset=2),
                estimate_prior,
                self.config,
                checkpoint=checkpoint,
                verbose=self.verbose,
            )
        self.net = net
        pred = stage.predict(net, tgt_eval, self.config.student_temperature)
        self.classes = stage.class_names(self.seen, pred.label, self.n_types_)
        self.timings["fit"] = time.perf_counter() - start
        return self

    def predict(self, target: AnnData) -> Annotation:
        """Annotate ``target``'s cells (streamed in minibatches; ``target`` is not modified)."""
        if self.net is None:
            raise RuntimeError("OpenWorldAnnotator: call fit() (or load()) before predict()")
        start = time.perf_counter()
        source = prepare(target, genes=self.genes, name="target")
        pred = stage.predict(
            self.net, self._loader(source, train=False, offset=0), self.config.student_temperature
        )
        names = np.asarray(self.classes, dtype=object)[pred.label]
        order = self.seen + sorted(set(self.classes) - set(self.seen), key=lambda s: int(s[6:]))
        self.timings["predict"] = time.perf_counter() - start
        return Annotation(
            label=pd.Categorical(names, categories=order),
            novel=pred.label >= len(self.seen),
            confidence=pred.proba.max(1),
            proba=pred.proba,
            features=pred.features,
            classes=list(self.classes),
        )

    def settings(self) -> dict[str, Any]:
        """The configuration as plain values (tuples as lists), as ``uns`` and save store it."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self.config).items()
        }

    def save(self, folder: str | os.PathLike) -> None:
        """Write the fitted model to ``folder`` (created if needed)."""
        if self.net is None:
            raise RuntimeError("OpenWorldAnnotator: nothing to save; call fit() first")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), path / MODEL_FILE)
        meta = {
            "n_types": self.n_types,
            "n_types_": self.n_types_,
            "seed": self.seed,
            "config": self.settings(),
            "genes": self.genes,
            "seen": self.seen,
            "classes": self.classes,
            "priors": [p.tolist() for p in self.priors],
            "history": self.history,
            "auto_scores": {str(k): v for k, v in self.auto_scores.items()},
        }
        (path / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str = "cpu") -> OpenWorldAnnotator:
        """Read a model written by :meth:`save`."""
        path = Path(folder)
        if not (path / META_FILE).is_file():
            raise FileNotFoundError(
                f"{path} holds no saved OpenWorldAnnotator ({META_FILE} missing)"
            )
        meta: dict[str, Any] = json.loads((path / META_FILE).read_text())
        config = meta["config"]
        config["teacher_temperature"] = tuple(config["teacher_temperature"])
        model = cls(
            meta["n_types"], config=OpenWorldConfig(**config), seed=meta["seed"], device=device
        )
        model.n_types_, model.genes, model.seen = meta["n_types_"], meta["genes"], meta["seen"]
        model.classes, model.history = meta["classes"], meta["history"]
        model.priors = [np.asarray(p) for p in meta["priors"]]
        model.auto_scores = {int(k): v for k, v in meta["auto_scores"].items()}
        net = AnnotatorNet(len(model.genes), model.n_types_).to(model.device)
        net.load_state_dict(
            torch.load(path / MODEL_FILE, map_location=model.device, weights_only=True)
        )
        model.net = net.eval()
        return model
