"""Translating the reference library's configs into :class:`acsleuth.ACsleuth` settings."""

from __future__ import annotations

import copy
from typing import Any

import torch
from anndata import AnnData
from torch import nn

FIXED_SHAPES = {
    "Discriminator": {"hidden_dim": [256, 16], "num_blocks": 1},
    "Generator": {"hidden_dim": [512, 256], "num_blocks": 2},
    "Scorer": {"hidden_dim": [512, 256]},
}


def check_networks(configs: Any, n_genes: int) -> None:
    """Refuse network shapes acsleuth does not build, and an ``in_dim`` unlike the data's."""
    name = type(configs).__name__
    for section, fixed in FIXED_SHAPES.items():
        values = getattr(configs, section, None)
        if values is None:
            continue
        for key, expected in fixed.items():
            got = values.get(key, expected)
            if (list(got) if isinstance(got, (list, tuple)) else got) != expected:
                raise ValueError(
                    f"{name}.{section}[{key!r}] = {got!r} is not supported: acsleuth's networks "
                    f"have the fixed shapes of docs/method.md §1 ({key} {expected!r}); remove that assignment"
                )
        if values.get("in_dim", n_genes) != n_genes:
            raise ValueError(
                f"{name}.{section}['in_dim'] is {values['in_dim']} but the data have {n_genes} genes; "
                f"build the configs with {type(configs).__name__}(gene_dim={n_genes})"
            )


def engine_settings(configs: Any) -> dict[str, Any]:
    """The :class:`acsleuth.ACsleuth` keyword arguments every reference config shares."""
    weights = configs.loss_weight
    return dict(
        batch_size=int(configs.batch_size),
        learning_rate=float(configs.learning_rate),
        reconstruction_weight=float(weights["w_rec"]),
        adversarial_weight=float(weights["w_adv"]),
        gp_weight=float(weights["w_gp"]),
        random_state=int(configs.random_state),
        device=str(configs.device),
    )


def n_inputs(generator: nn.Module) -> int:
    """The number of genes a module I generator takes."""
    first = next(m for m in generator.encoder.modules() if isinstance(m, nn.Linear))
    return first.in_features


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` when it already is on ``device``, else a copy moved there (the caller's is kept)."""
    current = next(module.parameters()).device
    if current == device:
        return module
    return copy.deepcopy(module).to(device)


def check_genes(adata: AnnData, n_genes: int, what: str) -> None:
    if not isinstance(adata, AnnData):
        raise TypeError(f"{what} must be an AnnData, got {type(adata).__name__}")
    if adata.n_vars != n_genes:
        raise ValueError(
            f"{what} has {adata.n_vars} genes but the trained generator takes {n_genes}; pass data "
            "on the reference's genes (e.g. adata[:, ref.var_names])"
        )
