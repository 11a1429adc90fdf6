"""scanpy conventions as tests: tools and plots share one calling shape."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import matplotlib
import numpy as np
import pytest

import acsleuth
from acsleuth import pl, tl

matplotlib.use("Agg")

TOOLS = [
    f
    for name, f in inspect.getmembers(tl, inspect.isfunction)
    if not name.startswith("_") and f.__module__ == tl.__name__
]
PLOTS = [
    f
    for name, f in inspect.getmembers(pl, inspect.isfunction)
    if not name.startswith("_") and f.__module__ == pl.__name__
]


def test_there_are_tools_and_plots() -> None:
    assert TOOLS and PLOTS


@pytest.mark.parametrize("func", TOOLS, ids=lambda f: f.__name__)
def test_tools_take_adata_first_then_keyword_only_key_added_and_copy(func) -> None:
    params = list(inspect.signature(func).parameters.values())
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    kw = {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert kw["key_added"].default.startswith("acsleuth") and kw["copy"].default is False
    assert "Returns" in func.__doc__ and "obs[" in func.__doc__


@pytest.mark.parametrize("func", PLOTS, ids=lambda f: f.__name__)
def test_plots_take_show_ax_and_return_fig(func) -> None:
    kw = inspect.signature(func).parameters
    assert {"show", "ax", "return_fig"} <= set(kw)


def test_public_api_is_exported() -> None:
    for name in (
        "ACsleuth",
        "CellTypeClassifier",
        "tl",
        "pl",
        "metrics",
        "datasets",
        "data",
        "ops",
        "__version__",
    ):
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


# ------------------------------------------------------------------ the house (issue 15)
PACKAGE = Path(acsleuth.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80  # without the docstring; longer ones say why in it ("Over 80 lines")


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _base(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` imports from."""
    if not node.level:
        return node.module or ""
    package = _dotted(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, *([node.module] if node.module else [])])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path: Path) -> list[str]:
    """``from acsleuth.x import _name`` of a name that is not a module, and ``x._name`` of an
    acsleuth module ``x`` bound by an import, in the file at ``path``."""
    tree = ast.parse(path.read_text())
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _base(path, node).startswith("acsleuth"):
            base = _base(path, node)
            for alias in node.names:
                if _is_module(f"{base}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
                elif _private(alias.name):
                    found.append(f"line {node.lineno}: from {base} import {alias.name}")
        elif isinstance(node, ast.Import):
            modules.update(
                a.asname or a.name.split(".")[0]
                for a in node.names
                if a.name.startswith("acsleuth")
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_private_use_finder_finds_what_it_looks_for(tmp_path) -> None:
    source = PACKAGE / "stages" / "probe_for_test.py"
    source.write_text(
        "from . import detect\nfrom .detect import _Inputs\nfrom ..ops import _reference\n"
        "x = detect._Inputs\ny = _reference.kin_topk\n"
    )
    try:
        assert private_uses(source) == [
            "line 2: from acsleuth.stages.detect import _Inputs",
            "line 4: detect._Inputs",
        ]
    finally:
        source.unlink()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_uses_a_private_name_of_another(path: Path) -> None:
    assert private_uses(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_are_short_and_long_functions_say_why(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node) or ""
            body = node.body[1:] if doc else node.body
            lines = node.end_lineno - body[0].lineno + 1 if body else 0
            assert lines <= MAX_FUNCTION_LINES or "Over 80 lines" in doc, node.name


def test_the_folders_name_the_homes_of_defaults_anndata_and_stages() -> None:
    from acsleuth import _constants
    from acsleuth._anndata import detect

    assert _constants.Params().learning_rate == _constants.LEARNING_RATE
    assert detect.keys("x").corrected == "x_corrected"
    for stage in ("detect", "score", "kin", "style", "subtype"):
        assert (PACKAGE / "stages" / f"{stage}.py").is_file()
