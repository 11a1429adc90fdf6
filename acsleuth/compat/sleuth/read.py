"""Reading data sets as the reference library does, and its pickle of (reference, target, label)."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..._atomic import atomic_path
from ...data import DataError
from ...data.io import read as read_any

PICKLE_KEYS = ("reference", "target", "label")


def preprocess_data(adata: AnnData, gene_list: Sequence[str] | None = None) -> AnnData:
    """A normalised copy: unique names; genes filtered (``gene_list is None``: drop ``ERCC*``
    and ``MT-*`` genes and genes seen in fewer than 3 cells) or reindexed to ``gene_list``
    (genes it lacks are zeros, with a warning); then ``log1p(normalize_total(X))``."""
    import scanpy as sc

    adata = adata[:, adata.var_names.notnull()].copy()
    adata.var_names_make_unique()
    adata.obs_names_make_unique()
    if gene_list is None:
        names = adata.var_names.str
        adata = adata[:, ~(names.startswith("ERCC") | names.startswith("MT-"))].copy()
        sc.pp.filter_genes(adata, min_cells=3)
    else:
        adata = _reindex_genes(adata, list(gene_list))
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    return adata


def _reindex_genes(adata: AnnData, genes: list[str]) -> AnnData:
    found = adata.var_names.get_indexer(genes)
    absent = found < 0
    if absent.all():
        raise DataError(
            "the target shares no gene with the reference; give both the same kind of gene names"
        )
    out = AnnData(
        adata.X[:, np.maximum(found, 0)], obs=adata.obs.copy(), var=pd.DataFrame(index=genes)
    )
    if absent.any():
        warnings.warn(
            f"the target lacks {int(absent.sum())} of the {len(genes)} reference genes; they are zeros",
            UserWarning,
            stacklevel=3,
        )
        out.X = (
            out.X @ sp.diags((~absent).astype(out.X.dtype))
            if sp.issparse(out.X)
            else out.X * ~absent
        )
    return out


def _read_names(folder: str, names: str | Sequence[str]) -> AnnData:
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("read: no data set name given")
    adatas = [
        read_any(os.path.join(folder, n if n.endswith(".h5ad") else f"{n}.h5ad")) for n in names
    ]
    return adatas[0] if len(adatas) == 1 else ad.concat(adatas)


def read(
    ref_dir: str,
    ref_name: str | Sequence[str],
    tgt_dir: str | None = None,
    tgt_name: str | Sequence[str] | None = None,
    preprocess: bool = True,
) -> tuple[AnnData, AnnData]:
    """``(ref, tgt)`` read from ``<dir>/<name>.h5ad`` files (several names are concatenated).

    ``tgt_dir`` defaults to ``ref_dir`` and ``tgt_name`` to ``ref_name``. With ``preprocess``
    the reference's genes are filtered, the target is put on the reference's genes, and both
    are log-normalised (:func:`preprocess_data`). The files are opened read-only.
    """
    ref = _read_names(ref_dir, ref_name)
    tgt = _read_names(
        ref_dir if tgt_dir is None else tgt_dir, ref_name if tgt_name is None else tgt_name
    )
    if preprocess:
        ref = preprocess_data(ref)
        tgt = preprocess_data(tgt, ref.var_names)
    return ref, tgt


def save_pkl(*args: Any) -> None:
    """Pickle ``{"reference": ref, "target": tgt, "label": label}`` to a file.

    Called ``save_pkl(path, ref, tgt, label)`` (``label`` optional) or with the path last,
    ``save_pkl(ref, tgt, label, path)``. The file is written under a temporary name and
    renamed, so an interrupted save leaves any previous file whole.
    """
    paths = [i for i, a in enumerate(args) if isinstance(a, (str, os.PathLike))]
    if len(paths) != 1 or paths[0] not in (0, len(args) - 1) or len(args) not in (3, 4):
        raise TypeError("save_pkl: call save_pkl(path, ref, tgt, label) (label optional)")
    path = args[paths[0]]
    data = list(args[1:] if paths[0] == 0 else args[:-1])
    if len(data) == 2:
        data.append(None)
    for what, value in zip(PICKLE_KEYS[:2], data[:2], strict=True):
        if not isinstance(value, AnnData):
            raise TypeError(f"save_pkl: {what} must be an AnnData, got {type(value).__name__}")
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as handle:
        pickle.dump(
            dict(zip(PICKLE_KEYS, data, strict=True)), handle, protocol=pickle.HIGHEST_PROTOCOL
        )


def load_pkl(path: str | os.PathLike) -> tuple[AnnData, AnnData, Any]:
    """``(ref, tgt, label)`` from a pickle written by :func:`save_pkl` (or the reference library).

    Only open pickles you trust: loading one can run arbitrary code.
    """
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    if not isinstance(data, dict) or any(key not in data for key in PICKLE_KEYS[:2]):
        raise ValueError(
            f"{path}: not a data set pickle; expected a dict with keys {PICKLE_KEYS} "
            f"(got {type(data).__name__}{'' if not isinstance(data, dict) else ' with keys ' + str(list(data))})"
        )
    return data["reference"], data["target"], data.get("label")


__all__ = ["load_pkl", "preprocess_data", "read", "save_pkl"]
