"""Benchmark data: a negative-binomial simulator and a held-out-cell-type split of PBMCs.

Both functions return ``(reference, target)``: the reference holds normal cells only, the
target holds normal and anomalous cells, with ``obs["cell_type"]`` (categorical) and
``obs["is_anomaly"]`` (bool) on both. :func:`causal_panels` is ACE's simulation of
explanatory genes (one AnnData with ``var["role"]``). :func:`write_synthetic` writes the simulator's output
to ``.h5ad`` files chunk by chunk, for atlas-sized data that does not fit in memory.
"""

from __future__ import annotations

from .files import write_synthetic
from .panels import causal_panels
from .pbmc import PBMC_CELL_TYPES, pbmc_holdout
from .simulator import synthetic

__all__ = ["PBMC_CELL_TYPES", "causal_panels", "pbmc_holdout", "synthetic", "write_synthetic"]
