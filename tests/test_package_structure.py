"""scanpy conventions as tests: tools and plots share one calling shape."""

from __future__ import annotations

import inspect

import matplotlib
import numpy as np
import pytest

import acsleuth
from acsleuth import pl, tl

matplotlib.use("Agg")

TOOLS = [f for name, f in inspect.getmembers(tl, inspect.isfunction) if not name.startswith("_")
         and f.__module__ == tl.__name__]
PLOTS = [f for name, f in inspect.getmembers(pl, inspect.isfunction) if not name.startswith("_")
         and f.__module__ == pl.__name__]


def test_there_are_tools_and_plots() -> None:
    assert TOOLS and PLOTS


@pytest.mark.parametrize("func", TOOLS, ids=lambda f: f.__name__)
def test_tools_take_adata_first_then_keyword_only_key_added_and_copy(func) -> None:
    params = list(inspect.signature(func).parameters.values())
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    kw = {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert kw["key_added"].default == "acsleuth" and kw["copy"].default is False
    assert "Returns" in func.__doc__ and "obs[" in func.__doc__


@pytest.mark.parametrize("func", PLOTS, ids=lambda f: f.__name__)
def test_plots_take_show_ax_and_return_fig(func) -> None:
    kw = inspect.signature(func).parameters
    assert {"show", "ax", "return_fig"} <= set(kw)


def test_public_api_is_exported() -> None:
    for name in ("ACsleuth", "tl", "pl", "metrics", "datasets", "data", "ops", "__version__"):
        assert hasattr(acsleuth, name)


def test_score_plot_says_what_to_run_first() -> None:
    adata = acsleuth.datasets.synthetic(10, 10, 5, anomaly_ratio=0.2)[1]
    with pytest.raises(KeyError, match="score_anomalies"):
        pl.scores(adata, show=False)


def test_score_plot_draws_a_histogram_per_group() -> None:
    adata = acsleuth.datasets.synthetic(10, 40, 5, anomaly_ratio=0.25)[1]
    adata.obs["acsleuth_score"] = np.linspace(0, 1, adata.n_obs)
    adata.obs["acsleuth_anomaly"] = adata.obs["acsleuth_score"] > 0.7
    adata.uns["acsleuth"] = {"threshold": 0.7}
    fig = pl.scores(adata, groupby="is_anomaly", return_fig=True)
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # one bar container per group
    assert any(line.get_xdata()[0] == 0.7 for line in ax.lines)  # the threshold
