"""Stages II-IV of :class:`~acsleuth.ACsleuth` (batch correction, kin, subtypes), mixed into it.

Orchestration only, as in :mod:`acsleuth.model.acsleuth`: the computation is in
:mod:`acsleuth.stages.style`, :mod:`acsleuth.stages.kin` and :mod:`acsleuth.stages.subtype`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import AnomalyExpression, Kin
from .._threads import with_threads
from ..data import ExpressionSource
from ..stages.kin import find_kin
from ..stages.style import correct_expression
from ..stages.subtype import SubtypeResult, subtype_cells
from ..train import Checkpoint


class PipelineStages:
    """Modules II-IV on a fitted module I; :class:`~acsleuth.ACsleuth` provides
    ``generator_``, ``genes_``, ``neighbours_``, ``settings``, ``device`` and
    ``_require_fitted``."""

    @with_threads
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
        layer: str | None = None,
        history: dict[str, list[dict[str, float]]] | None = None,
        batch_scale: pd.DataFrame | np.ndarray | None = None,
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
        and resumes the style transfer's training; its per-epoch losses go to
        ``history["style"]`` when ``history`` is given. With ``batch_key`` each batch's
        per-gene scale against the reference is divided out of the target first, as
        :meth:`evaluate` divides it out of the distance (``batch_scale``, the default;
        :mod:`acsleuth.stages.batch_scale`); pass the scale scoring estimated
        (``ScoreResult.batch_scale``, a batches x genes table) as ``batch_scale`` to skip
        estimating it again.

        Returns ``out``, filled chunk by chunk with the float32 ``(n_obs, n_genes_)``
        corrected expression: any array taking row-slice assignment (a numpy array or
        memmap, or an ``h5py`` dataset to stream an atlas to disk); a new numpy array when
        None.
        """
        self._require_fitted()
        return correct_expression(
            self.generator_,
            target,
            reference,
            normal,
            self.genes_,
            self.settings,
            batch_key=batch_key,
            kin=kin,
            anomalies=anomalies,
            out=out,
            device=self.device,
            timings={} if timings is None else timings,
            checkpoint=checkpoint,
            layer=layer,
            history=history,
            neighbours=self.neighbours_,
            batch_scale=batch_scale,
        )

    def _kin(
        self, target: ExpressionSource, reference: ExpressionSource, rows: np.ndarray, kin: Kin
    ) -> np.ndarray:
        """Reference kin rows of target ``rows`` (module II; :func:`acsleuth.stages.kin.find_kin`)."""
        return find_kin(self.generator_, target, reference, rows, kin, self.settings, self.device)

    @with_threads
    def subtype(
        self,
        x: np.ndarray,
        *,
        n_subtypes: int | Literal["auto"] = "auto",
        timings: dict[str, float] | None = None,
    ) -> SubtypeResult | None:
        """Subtypes of the anomalies from their (corrected) expression ``x (N, n_genes_)``
        (:func:`acsleuth.stages.subtype.subtype_cells`: None when ``N == 0``, ``n_subtypes``
        lowered to ``N`` with a warning). Seconds go to ``timings["subtype"]``."""
        self._require_fitted()
        timings = {} if timings is None else timings
        return subtype_cells(
            x,
            self.generator_,
            self.settings,
            n_subtypes=n_subtypes,
            device=self.device,
            timings=timings,
        )


__all__ = ["PipelineStages"]
