"""The method names users know from scikit-learn, pyod and scvi-tools, on :class:`ACsleuth`.

- ``get_params`` / ``set_params``: the constructor's settings, so that
  ``sklearn.base.clone(model)`` gives an unfitted model with the same settings;
- ``score_samples`` / ``decision_function`` with scikit-learn's outlier-detection signs
  (as ``IsolationForest``: lower = more anomalous; ``decision_function < 0`` = anomaly), and
  ``threshold_``, the called score's threshold of the last scoring, in score units;
- ``get_latent_representation(adata)`` (scvi-tools): module I's encoder embedding.

A cell's MMD score (``score="mmd"``, the default) depends on the other cells scored with it:
the predictor is trained on the target it scores. Score together the cells you compare.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from anndata import AnnData

from .._constants import Params


class FamiliarAPI:
    """Mixed into :class:`~acsleuth.ACsleuth` (which provides ``params``, ``evaluate`` and ``embed``)."""

    params: dict[str, Any]
    threshold_: float | None = None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's settings (scikit-learn's interface; ``deep`` has nothing to add)."""
        return dict(self.params)

    def set_params(self, **params: Any) -> FamiliarAPI:
        """Change settings (checked as the constructor checks them); returns the model.

        Settings of training take effect at the next :meth:`fit`; ``device`` moves a fitted
        model's networks at once.
        """
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(
                f"ACsleuth: unknown setting(s) {unknown}; the settings are {sorted(self.params)}"
            )
        Params(**{**self.params, **params})  # refuses a bad value before anything changes
        self.params.update(params)
        if "device" in params:  # move a fitted model's networks at once
            from .._device import resolve_device

            self.device = resolve_device(params["device"])
            for name in ("generator_", "critic_", "residual_scale_", "anchors_"):
                if getattr(self, name, None) is not None:
                    setattr(self, name, getattr(self, name).to(self.device))
        return self

    def score_samples(self, target: AnnData | str | os.PathLike, **kwargs: Any) -> np.ndarray:
        """Minus the anomaly score of each cell: lower = more anomalous (scikit-learn's sign).

        Keyword arguments go to :meth:`evaluate` (``batch_key``, ``layer``, ``score``).
        """
        return -self.evaluate(target, **kwargs).score

    def decision_function(self, target: AnnData | str | os.PathLike, **kwargs: Any) -> np.ndarray:
        """``threshold_ - score`` per cell: negative for the cells called anomalous, as
        scikit-learn's outlier detectors (a cell at the threshold gets 0 and is called)."""
        result = self.evaluate(target, **kwargs)
        return result.threshold - result.score

    def get_latent_representation(
        self, adata: AnnData | str | os.PathLike, *, layer: str | None = None
    ) -> np.ndarray:
        """Module I's encoder embedding of every cell, float32 ``(n_obs, 256)`` (scvi-tools' name;
        also written to ``obsm["X_acsleuth"]`` by :func:`acsleuth.tl.score_anomalies`)."""
        return self.embed(adata, layer=layer).cpu().numpy().astype(np.float32, copy=False)


__all__ = ["FamiliarAPI"]
