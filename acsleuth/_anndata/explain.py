"""ACE's AnnData contract: the expression and embedding it reads, the panels it writes.

Panels go to ``uns[f"{key_added}_explain"]`` in the layout of scanpy's
``rank_genes_groups`` (record arrays with one field per group), so that
``sc.get.rank_genes_groups_df`` and ``sc.pl.rank_genes_groups_dotplot`` read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from torch import Tensor, nn

from ..nn.neural_kmeans import StudentTHead
from ..stages.explain import (
    ExplainConfig,
    GroupExplanation,
    cluster_model,
    complement_model,
    explain,
    fitted_embedding,
    group_centroids,
    kmeans_head,
    pca_embedding,
    whitened_embedding,
)

if TYPE_CHECKING:
    from ..model import ACsleuth

SUFFIX = "_explain"


def explain_key(key_added: str) -> str:
    """``uns`` key of the panels written under the prefix ``key_added``."""
    return f"{key_added}{SUFFIX}"


def expression(
    adata: AnnData, *, use_raw: bool | None, layer: str | None
) -> tuple[np.ndarray, list[str]]:
    """Dense float32 ``(n_obs, G)`` expression and gene names: ``layers[layer]``, else
    ``.raw`` (when present and ``use_raw`` is not False), else ``X``."""
    if layer is not None and use_raw:
        raise ValueError("explain: pass either layer or use_raw=True, not both")
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(
                f"explain: layers[{layer!r}] is missing; layers are {list(adata.layers)}"
            )
        matrix, names = adata.layers[layer], adata.var_names
    elif adata.raw is not None and use_raw is not False:
        matrix, names = adata.raw.X, adata.raw.var_names
    else:
        matrix, names = adata.X, adata.var_names
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    dense = np.asarray(dense, dtype=np.float32)
    if not np.isfinite(dense).all():
        raise ValueError(
            "explain: the expression has NaN or infinite values; clean or impute them first"
        )
    return dense, list(map(str, names))


def group_codes(adata: AnnData, groupby: str) -> tuple[np.ndarray, list[str]]:
    """Codes ``0..K-1`` of ``obs[groupby]`` (-1 for missing) and the ``K >= 2`` group names."""
    if groupby not in adata.obs:
        raise KeyError(
            f"explain: obs[{groupby!r}] is missing; pass groupby= an obs column of groups"
        )
    labels = adata.obs[groupby]
    labels = labels if isinstance(labels.dtype, pd.CategoricalDtype) else labels.astype("category")
    labels = labels.cat.remove_unused_categories()
    names = [str(c) for c in labels.cat.categories]
    if len(names) < 2:
        raise ValueError(
            f"explain: obs[{groupby!r}] has {len(names)} group(s); ACE needs at least 2"
        )
    return labels.cat.codes.to_numpy().astype(np.int64), names


class _Encoder(nn.Module):
    """A fitted ACsleuth's module-I encoder, in eval mode on the CPU."""

    def __init__(self, model: ACsleuth) -> None:
        super().__init__()
        import copy

        self.encoder = copy.deepcopy(model.generator_.encoder).cpu().eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x).float()


def resolve_embedding(
    adata: AnnData, x: np.ndarray, embedding: Any, config: ExplainConfig
) -> tuple[Callable[[Tensor], Tensor], dict[str, Any]]:
    """The differentiable map ``x -> z`` named by ``embedding`` and what to record of it.

    ``"whitened"``: :func:`~acsleuth.stages.explain.whitened_embedding` of ``x``;
    ``"pca"``: principal components of ``x``; an ``obsm`` key: the least-squares linear map
    from ``x`` to it (exact for PCA-like embeddings; its R^2 is recorded); a fitted
    :class:`~acsleuth.ACsleuth`: its encoder (``x`` must be on the model's genes); a
    callable: used as is on ``(B, G)`` float32 tensors.
    """
    from ..model import ACsleuth

    if isinstance(embedding, ACsleuth):
        return _Encoder(embedding), {"embedding": "acsleuth_encoder"}
    if isinstance(embedding, str) and embedding == "whitened":
        return whitened_embedding(x, config.whiten_floor), {"embedding": "whitened"}
    if isinstance(embedding, str) and embedding == "pca":
        mapping = pca_embedding(
            x, config.n_components, standardize=config.standardize, seed=config.seed
        )
        return mapping, {"embedding": "pca"}
    if isinstance(embedding, str):
        if embedding not in adata.obsm:
            raise KeyError(
                f"explain: embedding {embedding!r} is neither 'whitened', 'pca' nor an obsm key "
                f"({list(adata.obsm)}); pass 'whitened', 'pca', an obsm key, a fitted ACsleuth "
                "or a callable"
            )
        z = np.asarray(adata.obsm[embedding], dtype=np.float64)
        rows = np.isfinite(z).all(1)
        mapping, r2 = fitted_embedding(x[rows].astype(np.float64), z[rows])
        return mapping, {"embedding": embedding, "embedding_r2": r2}
    if callable(embedding):
        return embedding, {"embedding": getattr(embedding, "__name__", type(embedding).__name__)}
    raise TypeError(
        "explain: embedding must be 'whitened', 'pca', an obsm key, a fitted ACsleuth or a "
        f"callable, got "
        f"{type(embedding).__name__}"
    )


def _check_model_genes(embedding: Any, genes: list[str]) -> None:
    """An ACsleuth embedding needs the expression on its genes, in its order."""
    from ..model import ACsleuth

    if isinstance(embedding, ACsleuth) and list(genes) != list(embedding.genes_):
        raise ValueError(
            "explain: embedding=model needs the expression on the model's genes in order; pass "
            "adata[:, model.genes_] (and use_raw=False if .raw holds other genes)"
        )


def embed(mapping: Callable[[Tensor], Tensor], x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``mapping`` of every row of ``x``, as float64 numpy ``(N, d)``."""
    with torch.no_grad():
        parts = [
            mapping(torch.as_tensor(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ]
    z = torch.cat(parts).double().numpy()
    if z.ndim != 2 or len(z) != len(x):
        raise ValueError(f"explain: the embedding must map (N, G) to (N, d), got shape {z.shape}")
    return z


def _records(columns: dict[str, np.ndarray]) -> np.ndarray:
    """A record array with one field per group (scanpy's layout)."""
    return pd.DataFrame(columns).to_records(index=False)


def write(
    adata: AnnData,
    key_added: str,
    results: dict[str, GroupExplanation],
    genes: list[str],
    x: np.ndarray,
    codes: np.ndarray,
    names: list[str],
    n_genes: int,
    params: dict[str, Any],
) -> None:
    """Write the panels of ``results`` (group name -> explanation) to ``uns``."""
    top = {g: r.order[:n_genes] for g, r in results.items()}
    gene_names = np.asarray(genes, dtype=object)
    lfc = {}
    for g in results:
        inside = codes == names.index(g)
        a = np.clip(x[inside][:, top[g]].mean(0), 0.0, None)  # corrected values may dip below 0
        b = np.clip(x[~inside & (codes >= 0)][:, top[g]].mean(0), 0.0, None)
        lfc[g] = np.log2((np.expm1(a) + 1e-9) / (np.expm1(b) + 1e-9)).astype(np.float32)
    nan = {g: np.full(len(t), np.nan, dtype=np.float32) for g, t in top.items()}
    adata.uns[explain_key(key_added)] = {
        "names": _records({g: gene_names[t].astype(str) for g, t in top.items()}),
        "scores": _records(
            {g: results[g].ranking_score[t].astype(np.float32) for g, t in top.items()}
        ),
        "direction": _records({g: results[g].direction[t] for g, t in top.items()}),
        "mean_delta": _records(
            {g: results[g].mean_delta[t].astype(np.float32) for g, t in top.items()}
        ),
        "logfoldchanges": _records(lfc),
        "pvals": _records(nan),
        "pvals_adj": _records(nan),
        "flipped": {g: r.flipped for g, r in results.items()},
        "mean_l1": {g: r.l1 for g, r in results.items()},
        "n_cells": {g: r.n_cells for g, r in results.items()},
        "params": {"method": "ace", "reference": params.pop("reference", "rest"), **params},
    }


def explain_adata(
    adata: AnnData,
    *,
    groupby: str,
    embedding: Any,
    mode: str,
    reference: str | None,
    groups: list[str] | None,
    n_genes: int,
    x: np.ndarray,
    genes: list[str],
    config: ExplainConfig,
    key_added: str,
    centroids: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Check the inputs, build the cluster model, run ACE and write the panels.

    ``centroids (K, d)`` given (DESC's): the head is DESC's Student-t assignment; otherwise
    the neuralised k-means on the groups' mean embeddings.
    """
    if mode not in ("one_vs_rest", "one_vs_one"):
        raise ValueError(f"explain: mode must be 'one_vs_rest' or 'one_vs_one', got {mode!r}")
    if not isinstance(n_genes, (int, np.integer)) or n_genes < 1:
        raise ValueError(f"explain: n_genes must be a positive integer, got {n_genes!r}")
    codes, names = group_codes(adata, groupby)
    for name in [reference] if reference is not None else []:
        if name not in names:
            raise ValueError(
                f"explain: reference {name!r} is not a group of obs[{groupby!r}]: {names}"
            )
    if mode == "one_vs_one" and reference is None:
        raise ValueError("explain: mode='one_vs_one' needs reference= the group to move cells to")
    chosen = names if groups is None else [str(g) for g in groups]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"explain: groups {unknown} are not in obs[{groupby!r}]: {names}")
    _check_model_genes(embedding, genes)
    mapping, info = resolve_embedding(adata, x, embedding, config)
    labelled = codes >= 0
    z = embed(mapping, x[labelled])
    if centroids is None:
        mu = group_centroids(z, codes[labelled], len(names))
        head: nn.Module = kmeans_head(z, codes[labelled], mu, config.beta)
        info["head"] = "neural_kmeans"
    else:
        head, info["head"] = (
            StudentTHead(torch.as_tensor(centroids, dtype=torch.float32)),
            "student_t",
        )
    model = cluster_model(mapping, head)
    labelled_codes = codes[labelled]
    found = explain(
        x[labelled],
        codes[labelled],
        model,
        groups=[names.index(g) for g in chosen],
        mode=mode,
        reference=None if reference is None else names.index(reference),
        config=config,
        complement=lambda k: complement_model(mapping, z, labelled_codes, k, config.beta),
    )
    results = {names[k]: r for k, r in found.items()}
    params = {
        "groupby": groupby,
        "reference": reference if mode == "one_vs_one" else "rest",
        "mode": mode,
        "n_genes": int(n_genes),
        **info,
        **dict(asdict(config)),
        **(extra or {}),
    }
    write(adata, key_added, results, genes, x, codes, names, min(n_genes, len(genes)), params)


def explain_subtypes_into(
    adata: AnnData,
    genes: list[str],
    *,
    key_added: str,
    n_genes: int,
    corrected: Any,
    config: ExplainConfig,
    layer: str | None = None,
) -> None:
    """ACE on the anomaly subtypes written under ``key_added`` (see ``tl.explain_subtypes``)."""
    from .detect import corrected_expression, keys

    k = keys(key_added)
    if k.subtype not in adata.obs or k.subtype_embedding not in adata.obsm:
        raise KeyError(
            f"explain_subtypes: obs[{k.subtype!r}] or obsm[{k.subtype_embedding!r}] is missing; run "
            f"acsleuth.tl.subtype_anomalies(target, model, key_added={key_added!r}) first"
        )
    rows = np.flatnonzero(adata.obs[k.subtype].notna().to_numpy())
    if adata.obs[k.subtype].iloc[rows].nunique() < 2:
        raise ValueError(
            f"explain_subtypes: obs[{k.subtype!r}] has fewer than 2 subtypes; nothing to explain"
        )
    if corrected is None:
        x = corrected_expression(adata, genes, key_added, rows, layer=layer)
    else:
        x = np.asarray(corrected[rows], dtype=np.float32)
    cells = AnnData(
        X=x,
        obs=pd.DataFrame(  # the cells' own names: a string index, as AnnData wants
            {k.subtype: adata.obs[k.subtype].iloc[rows].astype(str).to_numpy()},
            index=adata.obs_names[rows].astype(str),
        ),
        obsm={k.subtype_embedding: np.asarray(adata.obsm[k.subtype_embedding])[rows]},
    )
    cells.obs[k.subtype] = cells.obs[k.subtype].astype("category")
    centroids = adata.uns.get(k.uns, {}).get("subtype_centroids")
    explain_adata(
        cells,
        groupby=k.subtype,
        embedding=k.subtype_embedding,
        mode="one_vs_rest",
        reference=None,
        groups=None,
        n_genes=n_genes,
        x=x,
        genes=list(genes),
        config=config,
        key_added=key_added,
        centroids=None if centroids is None else np.asarray(centroids),
    )
    adata.uns[explain_key(key_added)] = cells.uns[explain_key(key_added)]


__all__ = [
    "embed",
    "explain_adata",
    "explain_key",
    "explain_subtypes_into",
    "expression",
    "group_codes",
    "resolve_embedding",
    "write",
]
