"""``AdaptModel``: kin matching and style transfer (modules II-III) behind the reference's API."""

from __future__ import annotations

import copy

import numpy as np
from anndata import AnnData
from numpy.typing import ArrayLike

from ..._anndata import batch_codes
from ...model import ACsleuth
from ...nn import Generator
from ._engine import check_networks, engine_settings, n_inputs, on_device
from .configs import AdaptConfigs


class AdaptModel:
    """Remove batch effects from a target by style transfer into the reference's space.

    The settings are read from ``configs`` when the model is built; ``num_batches`` is the
    number of target batches (rows of the style matrix). Unlike the reference library:

    - Every batch gets its own style vector: the style block receives each cell's batch
      (the reference's never does, so more than one batch fails, docs/method.md §3).
    - Kin are matched on encoder embeddings by cosine similarity, streamed in tiles (the
      reference feeds the generator's output tuple to a dense N_T x N_R product and fails).
    - The corrected target is a new AnnData: ``tgt`` is not modified (the reference
      overwrites ``tgt.X``).
    """

    def __init__(self, configs: AdaptConfigs, num_batches: int) -> None:
        if int(num_batches) < 1:
            raise ValueError(f"AdaptModel: num_batches must be at least 1, got {num_batches}")
        self.num_batches = int(num_batches)
        self._configs = configs
        self._settings = dict(
            style_epochs=int(configs.n_epochs),
            style_n_critic=int(configs.n_critic),
            **engine_settings(configs),
        )

    def adapt(
        self,
        ref: AnnData,
        tgt: AnnData,
        batch_key: str | None,
        generator: Generator,
        *,
        normal: ArrayLike | None = None,
    ) -> AnnData:
        """The batch-corrected target, on the reference's genes.

        ``generator`` is the trained :attr:`AnomalyModel.G`; ``batch_key`` the ``tgt.obs``
        column of batches (``None``: one batch). The style transfer learns from the target
        cells ``normal`` selects (a boolean per cell; default all cells, as the reference
        does): pass the predicted normal cells to follow the paper. Anomalous cells get their
        own expression plus their batch's mean correction (see :meth:`acsleuth.ACsleuth.correct`).
        """
        for what, value in (("ref", ref), ("tgt", tgt)):
            if not isinstance(value, AnnData):
                raise TypeError(f"adapt: {what} must be an AnnData, got {type(value).__name__}")
        n_genes = n_inputs(generator)
        if ref.n_vars != n_genes:
            raise ValueError(
                f"adapt: ref has {ref.n_vars} genes but the generator takes {n_genes}; pass the "
                "reference the AnomalyModel was trained on"
            )
        check_networks(self._configs, n_genes)
        _, n_batches = batch_codes(tgt, batch_key)
        if n_batches > self.num_batches:
            raise ValueError(
                f"adapt: tgt.obs[{batch_key!r}] has {n_batches} batches but the model was built "
                f"for {self.num_batches}; build it with AdaptModel(configs, num_batches={n_batches})"
            )
        engine = ACsleuth(n_top_genes=n_genes, **self._settings)
        engine.generator_ = on_device(generator, engine.device)
        engine.genes_ = [str(g) for g in ref.var_names]
        normal = (
            np.ones(tgt.n_obs, dtype=bool) if normal is None else np.asarray(normal, dtype=bool)
        )
        corrected = engine.correct(tgt, ref, normal=normal, batch_key=batch_key)
        return AnnData(
            corrected,
            obs=tgt.obs.copy(),
            var=ref.var.copy(),
            obsm={key: value.copy() for key, value in tgt.obsm.items()},
            uns=copy.deepcopy(dict(tgt.uns)),
        )


__all__ = ["AdaptModel"]
