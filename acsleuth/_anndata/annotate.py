"""The open-world annotator's AnnData keys, writer and reader (scDET, docs/method.md §8.2).

Every key is built from ``key_added`` (default ``"acsleuth_annot"``) by :func:`keys`:

- ``obs[key_added]``: a reference type name for seen cells, ``"novel_1"``, ``"novel_2"``, ...
  (by decreasing size) for cells of new types (categorical)
- ``obs[f"{key_added}_novel"]`` (bool) and ``obs[f"{key_added}_confidence"]`` (the label's
  probability)
- ``obsm[f"X_{key_added}"]``: the 128-d embedding (of the ensemble's first network);
  ``obsm[f"{key_added}_proba"]``: class probabilities (the mean over the networks), columns in
  the order of ``uns[key_added]["classes"]``
- ``uns[key_added]``: ``classes``, ``cluster_map`` (class index -> type name), ``n_seen``,
  ``priors`` (the estimates of pi over training, ``(networks, estimates, classes)``), ``params``,
  ``seed``, ``timings`` and, with ``n_types="auto"``, ``n_types_scores`` (silhouette per K tried;
  empty when K was the reference's types or one more)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from . import add_timings, params_record

if TYPE_CHECKING:
    from ..model.annotator import Annotation, OpenWorldAnnotator

KEY_ADDED = "acsleuth_annot"


@dataclass(frozen=True)
class Keys:
    """The names of everything the annotator writes under one ``key_added``."""

    key_added: str = KEY_ADDED

    @property
    def label(self) -> str:
        return self.key_added

    @property
    def novel(self) -> str:
        return f"{self.key_added}_novel"

    @property
    def confidence(self) -> str:
        return f"{self.key_added}_confidence"

    @property
    def embedding(self) -> str:
        return f"X_{self.key_added}"

    @property
    def proba(self) -> str:
        return f"{self.key_added}_proba"

    @property
    def uns(self) -> str:
        return self.key_added


def keys(key_added: str = KEY_ADDED) -> Keys:
    """The keys of ``key_added``."""
    return Keys(key_added)


def write_annotation(
    adata: AnnData, result: Annotation, model: OpenWorldAnnotator, key_added: str = KEY_ADDED
) -> None:
    """Write ``result`` (of ``model.predict``) into ``adata`` under the keys of ``key_added``."""
    k = keys(key_added)
    adata.obs[k.label] = result.label
    adata.obs[k.novel] = result.novel
    adata.obs[k.confidence] = result.confidence
    adata.obsm[k.embedding] = result.features
    adata.obsm[k.proba] = result.proba
    record = {
        "classes": np.asarray(result.classes, dtype=object),
        "cluster_map": {str(i): name for i, name in enumerate(result.classes)},
        "n_seen": len(model.seen),
        "priors": np.asarray(model.priors, dtype=np.float64),
        "params": params_record(
            {"n_types": model.n_types, "n_types_used": model.n_types_, **model.settings()}
        ),
        "seed": model.seed,
    }
    if model.auto_scores:
        record["n_types_scores"] = {str(n): v for n, v in model.auto_scores.items()}
    adata.uns[k.uns] = record
    add_timings(adata, k.uns, model.timings)


def read_annotation(adata: AnnData, key_added: str = KEY_ADDED) -> tuple[np.ndarray, list[str]]:
    """The labels and class names written by :func:`write_annotation` (``KeyError`` if absent)."""
    k = keys(key_added)
    if k.label not in adata.obs or k.uns not in adata.uns:
        raise KeyError(
            f"no annotation under {key_added!r}: run acsleuth.tl.annotate (key_added={key_added!r}) "
            "first"
        )
    return adata.obs[k.label].astype(str).to_numpy(), [str(c) for c in adata.uns[k.uns]["classes"]]


__all__ = ["KEY_ADDED", "Keys", "keys", "read_annotation", "write_annotation"]
