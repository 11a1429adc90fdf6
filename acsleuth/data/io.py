"""Reading expression data: AnnData objects, ``.h5ad`` files, 10x folders and CSV/TSV tables."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from anndata import AnnData
from pandas.api.types import is_numeric_dtype

from .errors import DataError

logger = logging.getLogger("acsleuth")

FORMATS = (
    "an AnnData object, a .h5ad file, a 10x folder (matrix.mtx[.gz] with features.tsv[.gz] or "
    "genes.tsv[.gz] and barcodes.tsv[.gz]), or a .csv/.csv.gz/.tsv/.tsv.gz table "
    "(rows = cells, first column = cell names, header = gene names)"
)
TABLE_SEPARATORS = {".csv": ",", ".csv.gz": ",", ".tsv": "\t", ".tsv.gz": "\t"}


def read(data: str | os.PathLike | AnnData, *, backed: bool = False) -> AnnData:
    """Read expression data as an AnnData (cells x genes).

    Parameters
    ----------
    data
        An AnnData (returned unchanged), or a path to a ``.h5ad`` file, a 10x folder or a
        CSV/TSV table.
    backed
        Open a ``.h5ad`` file read-only on disk (``backed="r"``); other formats are read into memory.

    Raises
    ------
    DataError
        The path does not exist, has an unknown format or cannot be parsed.
    """
    if isinstance(data, AnnData):
        return data
    if not isinstance(data, str | os.PathLike):
        raise DataError(f"cannot read a {type(data).__name__}; pass {FORMATS}")
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; pass {FORMATS}")
    if path.is_dir():
        return _read_10x(path)
    suffix = next((s for s in (".h5ad", *TABLE_SEPARATORS) if path.name.lower().endswith(s)), None)
    if suffix == ".h5ad":
        return _read_h5ad(path, backed)
    if suffix in TABLE_SEPARATORS:
        return _read_table(path, TABLE_SEPARATORS[suffix])
    raise DataError(f"{path} is in an unknown format; pass {FORMATS}")


def _read_h5ad(path: Path, backed: bool) -> AnnData:
    if not h5py.is_hdf5(path):
        raise DataError(
            f"{path} could not be read as .h5ad: it is not an HDF5 file (empty, cut short, or "
            f"another format under a .h5ad name); write it with adata.write_h5ad, or pass {FORMATS}"
        )
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in ("obs", "var") if key not in f]
        if missing:
            raise DataError(
                f"{path} could not be read as .h5ad: it is an HDF5 file without AnnData's "
                f"{' and '.join(missing)} group(s); write it with adata.write_h5ad, or pass {FORMATS}"
            )
        return ad.read_h5ad(path, backed="r" if backed else None)
    except OSError as err:  # h5py: truncated or damaged
        raise DataError(
            f"{path} could not be read as .h5ad ({err}); the file is damaged or truncated (e.g. an "
            "interrupted copy): copy it again or write it again with adata.write_h5ad"
        ) from err


def _read_10x(folder: Path) -> AnnData:
    files = {
        "matrix": _find(folder, "matrix.mtx"),
        "features": _find(folder, "features.tsv") or _find(folder, "genes.tsv"),
        "barcodes": _find(folder, "barcodes.tsv"),
    }
    missing = [role for role, file in files.items() if file is None]
    if missing:
        raise DataError(
            f"{folder} is not a complete 10x folder: no {' / '.join(missing)} file found. "
            f"A folder must hold matrix.mtx[.gz], features.tsv[.gz] (or genes.tsv[.gz]) and "
            f"barcodes.tsv[.gz]; otherwise pass {FORMATS}"
        )
    counts = sp.csr_matrix(scipy.io.mmread(files["matrix"]).T, dtype=np.float32)
    features = pd.read_csv(files["features"], sep="\t", header=None, dtype=str)
    barcodes = pd.read_csv(files["barcodes"], sep="\t", header=None, dtype=str)[0]
    if counts.shape != (len(barcodes), len(features)):
        raise DataError(
            f"{folder}: matrix.mtx is {counts.shape[1]} genes x {counts.shape[0]} cells but there are "
            f"{len(features)} features and {len(barcodes)} barcodes; the three files must match"
        )
    var = pd.DataFrame(
        {"gene_ids": features[0].to_numpy()},
        index=pd.Index(features[1 if features.shape[1] > 1 else 0].to_numpy()),
    )
    if features.shape[1] > 2:
        var["feature_types"] = features[2].to_numpy()
        expression = var["feature_types"].to_numpy() == "Gene Expression"
        if expression.any() and not expression.all():
            logger.info(
                "%s: keeping the %d 'Gene Expression' features of %d",
                folder,
                int(expression.sum()),
                len(var),
            )
            counts, var = counts[:, np.flatnonzero(expression)], var[expression]
    return AnnData(X=counts, obs=pd.DataFrame(index=pd.Index(barcodes.to_numpy())), var=var)


def _find(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _read_table(path: Path, sep: str) -> AnnData:
    try:
        table = pd.read_csv(path, sep=sep, index_col=0)
    except (ValueError, OSError) as err:
        raise DataError(f"{path} could not be parsed as a table ({err})") from err
    text = [str(c) for c in table.columns if not is_numeric_dtype(table[c])]
    if text:
        raise DataError(
            f"{path}: {len(text)} column(s) are not numeric (e.g. {text[:3]}); the table must hold "
            "cells as rows, cell names in the first column and gene names in the header"
        )
    return AnnData(
        X=table.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=table.index.astype(str)),
        var=pd.DataFrame(index=table.columns.astype(str)),
    )
