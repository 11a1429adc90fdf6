"""A fitted model on disk: ``config.json`` (format, settings, genes, history) and ``weights.pt``.

``config.json["format"]`` is :data:`FORMAT`; :func:`read_config` refuses any other, and
:func:`read_weights` refuses weights whose gene count differs from the saved gene list, each
with one line saying what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_dir
from .._constants import Params
from ..nn import Critic, Generator
from ..stages.neighbours import ReferenceNeighbours

FORMAT = 1  # raise when the files' layout changes; read_config refuses other formats
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"


def write(
    path: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    genes: Sequence[str],
    history: Mapping[str, Any],
    timings: Mapping[str, float],
    weights: Mapping[str, Any],
    overwrite: bool = False,
    neighbours: ReferenceNeighbours | None = None,
) -> Path:
    """Write ``config.json`` and ``weights.pt`` into ``path``, under a temporary name then
    renamed; an existing ``path`` is refused unless ``overwrite=True``. ``neighbours``, the
    reference's neighbour index, is saved with the weights when given."""
    from .. import __version__

    with atomic_dir(path, overwrite=overwrite) as tmp:
        config = {
            "format": FORMAT,
            "acsleuth_version": __version__,
            "params": dict(params),
            "genes": list(genes),
            "history": dict(history),
            "timings": dict(timings),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        extra = {} if neighbours is None else {"neighbours": neighbours.state_dict()}
        torch.save({**weights, **extra}, tmp / WEIGHTS_FILE)
    return Path(path)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a model folder written by :func:`write`, checked: both files
    present, the format one this version reads, a settings table and a gene list."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a saved ACsleuth model: {name} is missing")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path / CONFIG_FILE} is not valid JSON ({err}); save the model again"
        ) from None
    version = config.get("format") if isinstance(config, dict) else None
    if version != FORMAT:
        raise ValueError(
            f"{path} holds a saved model of format {version!r}; this acsleuth reads format "
            f"{FORMAT} (save the model again with this version)"
        )
    for name, kind in (("params", dict), ("genes", list)):
        if not isinstance(config.get(name), kind):
            raise ValueError(
                f"{path / CONFIG_FILE} has no {name} {kind.__name__}; save the model again"
            )
    return config


def read_weights(path: str | os.PathLike, n_genes: int, device: torch.device) -> dict[str, Any]:
    """``weights.pt`` of a model folder on ``device``, checked against the ``n_genes`` of its
    gene list."""
    path = Path(path)
    state = torch.load(path / WEIGHTS_FILE, map_location=device, weights_only=True)
    scale = state.get("residual_scale") if isinstance(state, dict) else None
    if scale is None or "generator" not in state or "critic" not in state:
        raise ValueError(
            f"{path / WEIGHTS_FILE} is not an ACsleuth model's weights; save the model again"
        )
    if scale.shape[-1] != n_genes:
        raise ValueError(
            f"{path}: the weights are for {scale.shape[-1]} genes but config.json lists "
            f"{n_genes}; the folder mixes two models' files (save the model again)"
        )
    return state


@dataclass
class Fitted:
    """What :func:`read_model` reads: a fitted model's genes, networks and records."""

    genes: list[str]
    generator: Generator
    critic: Critic
    residual_scale: torch.Tensor
    anchors: torch.Tensor
    history: dict[str, Any]
    timings: dict[str, float]
    neighbours: ReferenceNeighbours | None = None  # absent from models saved before issue 16


def read_model(
    path: str | os.PathLike,
    params: Params,
    device: torch.device,
    config: dict[str, Any] | None = None,
) -> Fitted:
    """The networks and records of a model folder, built with ``params`` on ``device`` in eval
    mode (``config``: its checked ``config.json``, when already read)."""
    if config is None:
        config = read_config(path)
    genes = list(config["genes"])
    state = read_weights(path, len(genes), device)
    generator = Generator(len(genes), **params.generator_settings()).to(device)
    critic = Critic(len(genes)).to(device)
    generator.load_state_dict(state["generator"])
    critic.load_state_dict(state["critic"])
    generator.eval()
    critic.eval()
    return Fitted(
        genes,
        generator,
        critic,
        state["residual_scale"],
        state["anchors"],
        config.get("history", {}),
        config.get("timings", {}),
        ReferenceNeighbours.from_state_dict(state["neighbours"]) if "neighbours" in state else None,
    )


class Persistent:
    """Saving and loading, mixed into :class:`~acsleuth.ACsleuth` (which provides ``params``,
    ``settings``, ``device`` and the fitted attributes)."""

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` (format, parameters, genes, version) and ``weights.pt`` into
        ``path`` (:mod:`acsleuth.model.persist`).

        The folder is written under a temporary name and renamed; an existing ``path`` is
        refused unless ``overwrite=True``.
        """
        self._require_fitted()
        return write(
            path,
            params=self.params,
            genes=self.genes_,
            history=self.history_,
            timings=self.timings_,
            overwrite=overwrite,
            neighbours=self.neighbours_,
            weights={
                "generator": self.generator_.state_dict(),
                "critic": self.critic_.state_dict(),
                "residual_scale": self.residual_scale_,
                "anchors": self.anchors_,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> Any:
        """A model saved by :meth:`save`; ``device`` overrides the saved one.

        A folder of another format, a missing file, or weights that do not match the saved
        gene list are refused with a line saying which.
        """
        config = read_config(path)
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        return cls(**params)._load_fitted(Path(path), config)

    def _load_fitted(self, path: Path, config: dict[str, Any] | None = None) -> Any:
        """Read the genes, weights and history of a model saved by :meth:`save` into ``self``
        (``config``: its checked ``config.json``, when already read)."""
        fitted = read_model(path, self.settings, self.device, config)
        self.genes_, self.generator_, self.critic_ = fitted.genes, fitted.generator, fitted.critic
        self.residual_scale_, self.anchors_ = fitted.residual_scale, fitted.anchors
        self.neighbours_, self.history_, self.timings_ = (
            fitted.neighbours,
            fitted.history,
            fitted.timings,
        )
        return self


__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "WEIGHTS_FILE",
    "Fitted",
    "Persistent",
    "read_config",
    "read_model",
    "read_weights",
    "write",
]
