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

from .._constants import SEEN_LABELS
from .._seed import seeded
from ..data import DataError, MinibatchLoader, highly_variable_genes, prepare
from ..data.source import ExpressionSource
from ..nn.annotator import AnnotatorNet
from ..stages import annotate as stage
from ..stages.annotate_seen import SeenLabeller, fit_seen_labeller, relabel_seen
from ..train import Checkpoint
from ..train.checkpoint import Stateful, fingerprint
from ..train.contrastive import OpenWorldConfig, PriorHistory, train_open_world

MODEL_FILE = "annotator.pt"
META_FILE = "annotator.json"
LABELLER_FILE = "seen_labeller.pt"  # with seen_labels="linear"
MEMBER_SEED_STEP = 100  # ensemble member i trains with seed + 100 i


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
        Seeds the networks, the augmentation, the loaders and k-means (``config.members``
        networks are trained, member ``i`` with ``seed + 100 i``; their probabilities are
        averaged, novel slots aligned to the first member's).
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
        if isinstance(self.config.members, bool) or not isinstance(self.config.members, int):
            raise ValueError(f"config.members must be an integer >= 1, got {self.config.members!r}")
        if self.config.members < 1:
            raise ValueError(
                f"config.members={self.config.members}: train at least one network (members >= 1)"
            )
        if not 0.0 <= self.config.seen_override < 1.0:
            raise ValueError(
                f"config.seen_override must be in [0, 1), got {self.config.seen_override!r}"
            )
        if self.config.seen_labels not in SEEN_LABELS:
            raise ValueError(
                f"config.seen_labels must be one of {SEEN_LABELS}, got {self.config.seen_labels!r}"
            )
        self.seed = int(seed)
        self.device = torch.device(device)
        self.verbose = verbose
        self.nets: list[AnnotatorNet] = []
        self.seen_labeller: SeenLabeller | None = None  # with seen_labels="linear"
        self.slot_orders: list[np.ndarray] = []  # member's columns in the first member's order
        self.genes: list[str] = []
        self.seen: list[str] = []
        self.classes: list[str] = []
        self.priors: list[np.ndarray] = []  # per member: (estimates, K)
        self.history: list[list[dict[str, float]]] = []  # per member: losses per epoch
        self.timings: dict[str, float] = {}
        self.auto_scores: dict[int, float] = {}
        self.n_types_ = 0

    def _loader(self, source: ExpressionSource, *, train: bool, seed: int) -> MinibatchLoader:
        bs = self.config.batch_size
        return MinibatchLoader(
            source,
            batch_size=bs,
            shuffle=train,
            device=self.device,
            drop_last=train and source.n_obs > bs,
            seed=seed,
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
        ref_eval = self._loader(ref_src, train=False, seed=self.seed)
        tgt_eval = self._loader(tgt_src, train=False, seed=self.seed)
        k = self.n_types
        if k == "auto":
            k, self.auto_scores = stage.estimate_n_types(
                ref_eval, tgt_eval, len(self.seen), seed=self.seed
            )
        self.n_types_ = int(k)
        if self.n_types_ > tgt_src.n_obs + ref_src.n_obs:
            raise ValueError(f"n_types={k} exceeds the number of cells; lower it")
        labels = np.concatenate([codes, np.full(tgt_src.n_obs, -1)])
        carried: dict[str, Stateful] = {}
        fitted = [
            self._fit_member(
                member, (ref_src, tgt_src), (ref_eval, tgt_eval), codes, labels, checkpoint, carried
            )
            for member in range(self.config.members)
        ]
        # read after every member: a resumed run restores earlier members with the last one
        self.nets = [net for net, _, _ in fitted]
        self.priors = [np.stack([p.cpu().numpy() for p in h.estimates]) for _, h, _ in fitted]
        self.history = [history for _, _, history in fitted]
        preds = [stage.predict(net, tgt_eval, self.config.student_temperature) for net in self.nets]
        self.slot_orders = [np.arange(self.n_types_)] + [
            stage.align_novel_slots(preds[0].proba, p.proba, len(self.seen)) for p in preds[1:]
        ]
        if self.config.seen_labels == "linear":
            self.seen_labeller = fit_seen_labeller(
                ref_src,
                codes,
                len(self.seen),
                max_cells=self.config.seen_labeller_cells,
                seed=self.seed,
                device=self.device,
            )
        # the novel slots are named by size; the seen labeller never changes a novel label
        pred = stage.average_members(preds, self.slot_orders)
        self.classes = stage.class_names(self.seen, pred.label, self.n_types_)
        self.timings["fit"] = time.perf_counter() - start
        return self

    def _labelled(self, pred: stage.Predictions, loader: MinibatchLoader) -> stage.Predictions:
        """``pred`` with its seen-called cells named by the seen labeller, if there is one."""
        if self.seen_labeller is None:
            return pred
        proba = self.seen_labeller.proba(loader)
        return relabel_seen(pred, proba, self.config.seen_override)

    def _fit_member(
        self,
        member: int,
        sources: tuple[ExpressionSource, ExpressionSource],
        evals: tuple[MinibatchLoader, MinibatchLoader],
        codes: np.ndarray,
        labels: np.ndarray,
        checkpoint: Checkpoint | None,
        carried: dict[str, Stateful],
    ) -> tuple[AnnotatorNet, PriorHistory, list[dict[str, float]]]:
        """Train ensemble member ``member`` (seed ``seed + 100 member``); its network and prior
        estimates are added to ``carried`` (which later members checkpoint with their state).
        Returns them and its losses per epoch."""
        seed = self.seed + MEMBER_SEED_STEP * member
        n_seen, members = len(self.seen), self.config.members
        priors = PriorHistory()
        with seeded(seed, self.device):
            net = AnnotatorNet(len(self.genes), self.n_types_).to(self.device)

            def estimate_prior(epoch: int) -> torch.Tensor:
                pairs = [stage.contrastive_features(net, ld) for ld in evals]
                proj, feats = (torch.cat(part) for part in zip(*pairs, strict=True))
                clusters, _ = stage.kmeans(
                    proj,
                    self.n_types_,
                    n_iter=self.config.kmeans_iter,
                    n_init=self.config.kmeans_init,
                    seed=seed + epoch // self.config.estimate_every,
                )
                clusters = clusters.numpy()
                mapping = stage.match_clusters(clusters, labels, n_seen, self.n_types_)
                if self.config.seed_prototypes:
                    stage.seed_novel_prototypes(net, feats, clusters, mapping, n_seen)
                return torch.as_tensor(
                    stage.prior_from_clusters(clusters, mapping), dtype=torch.float32
                )

            history = train_open_world(
                net,
                self._loader(sources[0], train=True, seed=seed + 1),
                codes,
                self._loader(sources[1], train=True, seed=seed + 2),
                estimate_prior,
                self.config,
                checkpoint=checkpoint,
                verbose=self.verbose,
                desc="annotate" if members == 1 else f"annotate {member + 1}/{members}",
                priors=priors,
                carried=dict(carried),
            )
        carried[f"member{member}.net"] = net
        carried[f"member{member}.priors"] = priors
        return net, priors, history

    def predict(self, target: AnnData) -> Annotation:
        """Annotate ``target``'s cells (streamed in minibatches; ``target`` is not modified)."""
        if not self.nets:
            raise RuntimeError("OpenWorldAnnotator: call fit() (or load()) before predict()")
        start = time.perf_counter()
        source = prepare(target, genes=self.genes, name="target")
        loader = self._loader(source, train=False, seed=self.seed)
        tau = self.config.student_temperature
        pred = self._labelled(
            stage.average_members(
                [stage.predict(net, loader, tau) for net in self.nets], self.slot_orders
            ),
            loader,
        )
        names = np.asarray(self.classes, dtype=object)[pred.label]
        order = self.seen + sorted(set(self.classes) - set(self.seen), key=lambda s: int(s[6:]))
        self.timings["predict"] = time.perf_counter() - start
        return Annotation(
            label=pd.Categorical(names, categories=order),
            novel=pred.label >= len(self.seen),
            confidence=np.take_along_axis(pred.proba, pred.label[:, None], 1)[:, 0],
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
        if not self.nets:
            raise RuntimeError("OpenWorldAnnotator: nothing to save; call fit() first")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        torch.save([net.state_dict() for net in self.nets], path / MODEL_FILE)
        if self.seen_labeller is not None:
            torch.save(self.seen_labeller.state_dict(), path / LABELLER_FILE)
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
            "slot_orders": [o.tolist() for o in self.slot_orders],
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
        states = torch.load(path / MODEL_FILE, map_location=device, weights_only=True)
        if "slot_orders" not in meta:  # saved before ensembles: one network
            states, meta["priors"], meta["history"] = [states], [meta["priors"]], [meta["history"]]
            meta["slot_orders"] = [list(range(meta["n_types_"]))]
            meta["config"]["members"] = 1
        config = meta["config"]
        config["teacher_temperature"] = tuple(config["teacher_temperature"])
        if not (path / LABELLER_FILE).is_file():  # saved before the labeller, or "scdet"
            config["seen_labels"] = "scdet"
        model = cls(
            meta["n_types"], config=OpenWorldConfig(**config), seed=meta["seed"], device=device
        )
        model.n_types_, model.genes, model.seen = meta["n_types_"], meta["genes"], meta["seen"]
        model.classes, model.history = meta["classes"], meta["history"]
        model.priors = [np.asarray(p) for p in meta["priors"]]
        model.slot_orders = [np.asarray(o) for o in meta["slot_orders"]]
        model.auto_scores = {int(k): v for k, v in meta["auto_scores"].items()}
        for state in states:
            net = AnnotatorNet(len(model.genes), model.n_types_).to(model.device)
            net.load_state_dict(state)
            model.nets.append(net.eval())
        if config["seen_labels"] == "linear":
            state = torch.load(path / LABELLER_FILE, map_location=device, weights_only=True)
            model.seen_labeller = SeenLabeller.from_state_dict(state)
        return model
