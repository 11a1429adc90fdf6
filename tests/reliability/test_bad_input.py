"""What acsleuth survives: malformed and unusual input, through the API and ``acsleuth run``.

Every case is tried on the Python API (``ACsleuth().fit/run/score``, ``acsleuth.tl``,
``acsleuth.data``) and on the command line (``acsleuth.cli.main`` in this process, with a
fast model). Accepted input gives finite scores equal to those of the clean float32 input.
A refusal names what is wrong and how to fix it; on the command line it is one line on
stderr, exit code 2, no traceback (unless ``--debug``), with the input files unchanged and
no ``--out`` written.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import FastACsleuth, two_batches
from scipy.stats import spearmanr

import acsleuth
from acsleuth import tl
from acsleuth._constants import DEFAULTS
from acsleuth.cli import main
from acsleuth.data import DataError, highly_variable_genes, prepare, read

COLUMNS = r"\['cell_type', 'is_anomaly', 'batch'\]"  # the target's obs columns


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data() -> tuple[ad.AnnData, ad.AnnData]:
    """Raw UMI counts (CSR float32): 120 reference and 100 target cells x 50 genes, two batches."""
    return two_batches(120, 50)


@pytest.fixture
def reference(data) -> ad.AnnData:
    return data[0].copy()


@pytest.fixture
def target(data) -> ad.AnnData:
    return data[1].copy()


@pytest.fixture(scope="module")
def model(data) -> acsleuth.ACsleuth:
    """Fitted as ``acsleuth run`` fits it (same settings and seed)."""
    return FastACsleuth().fit(data[0])


@pytest.fixture(scope="module")
def clean(model, data) -> dict[str, np.ndarray]:
    """Every score of the clean target."""
    return model.evaluate(data[1]).scores


MMD_ATOL = 1e-3  # float32 rounding of the input, through training (the logits span ~0.2)


def assert_scores_match(scores: dict[str, np.ndarray], clean: dict[str, np.ndarray]) -> None:
    """The same scores up to float32 rounding of the input."""
    np.testing.assert_allclose(scores["scaled"], clean["scaled"], rtol=1e-4)
    np.testing.assert_allclose(scores["mmd"], clean["mmd"], rtol=0, atol=MMD_ATOL)
    np.testing.assert_allclose(scores["knn"], clean["knn"], rtol=1e-4)


def assert_default_score_matches(cells: pd.DataFrame, clean: dict[str, np.ndarray]) -> None:
    """The CLI's ``score`` column is the default score (the MMD logits) of the clean target."""
    assert DEFAULTS.score == "mmd"
    np.testing.assert_allclose(cells["score"], clean["mmd"], rtol=0, atol=MMD_ATOL)


def dense(adata: ad.AnnData) -> np.ndarray:
    return adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)


def with_x(adata: ad.AnnData, x) -> ad.AnnData:
    out = adata.copy()
    out.X = x
    return out


class Cli:
    """``acsleuth run`` on files in ``folder``; checks what every run must leave behind."""

    def __init__(self, folder: Path, capsys) -> None:
        self.folder, self.capsys, self.n = folder, capsys, 0
        self.rc, self.err, self.stdout, self.out = None, "", "", folder / "out"

    def write(self, name: str, adata: ad.AnnData) -> str:
        adata.write_h5ad(self.folder / name)
        return name

    def __call__(self, *extra: str, reference: str = "ref.h5ad", target: str = "tgt.h5ad") -> Cli:
        self.n += 1
        self.out = self.folder / f"out{self.n}"
        before = {p: p.read_bytes() for p in self.folder.rglob("*") if p.is_file()}
        self.capsys.readouterr()  # what the test printed before: not this command's output
        self.rc = main(
            [
                "run",
                "--reference",
                str(self.folder / reference),
                "--target",
                str(self.folder / target),
                "--out",
                str(self.out),
                "--device",
                "cpu",
                "--quiet",
                *extra,
            ]
        )
        captured = self.capsys.readouterr()
        self.err, self.stdout = captured.err, captured.out
        for path, content in before.items():
            assert path.read_bytes() == content, f"{path.name} was modified"
        if self.rc != 0:
            assert self.rc == 2
            assert not self.out.exists()
            assert self.err.startswith("acsleuth run: error: ") and self.err.count("\n") == 1, (
                self.err
            )
            assert "Traceback" not in self.err
        return self

    def refused(self, match: str) -> None:
        assert self.rc == 2, f"accepted: {self.stdout}"
        assert re.search(match, self.err), self.err

    def accepted(self) -> pd.DataFrame:
        """``cells.csv`` of a successful run."""
        assert self.rc == 0, self.err
        cells = pd.read_csv(self.out / "cells.csv", index_col="cell")
        assert np.isfinite(cells["score"]).all()
        return cells


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, data) -> Cli:
    monkeypatch.setattr(acsleuth, "ACsleuth", FastACsleuth)
    runner = Cli(tmp_path, capsys)
    runner.write("ref.h5ad", data[0])
    runner.write("tgt.h5ad", data[1])
    return runner


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "problem"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "negative")],
)
@pytest.mark.parametrize("side", ["reference", "target"])
def test_nan_inf_or_negative_values_are_refused_naming_how_many_cells_and_genes(
    model, reference, target, cli, value, problem, side
) -> None:
    bad = {"reference": reference, "target": target}[side]
    x = dense(bad)
    x[3, 4] = value
    bad = with_x(bad, x.copy())
    message = rf"{side}: X has {problem} values in 1 cells and 1 genes\. acsleuth expects raw counts .* drop or fix"
    with pytest.raises(DataError, match=message):
        FastACsleuth().fit(bad) if side == "reference" else model.score(bad)
    assert np.array_equal(dense(bad), x, equal_nan=True)  # the caller's object is untouched
    cli(**{side: cli.write("bad.h5ad", bad)}).refused(message)


def test_raw_counts_are_normalised_logged_and_score_like_log1p_normalised_input(
    reference, target, caplog
) -> None:
    def log1p_normalised(adata: ad.AnnData) -> ad.AnnData:
        x = dense(adata).astype(np.float64)
        return with_x(adata, np.log1p(x * (1e4 / x.sum(1, keepdims=True))).astype(np.float32))

    raw_x = dense(target)
    with caplog.at_level(logging.INFO, logger="acsleuth"):
        raw = FastACsleuth().fit(reference)
        scores = raw.evaluate(target).scores
    assert "reference: X looks like raw counts (integers, max" in caplog.text
    assert "target: X looks like raw counts" in caplog.text
    assert np.array_equal(dense(target), raw_x)  # normalised as read, not in place
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="acsleuth"):
        normalised = FastACsleuth().fit(log1p_normalised(reference))
        expected = normalised.evaluate(log1p_normalised(target)).scores
    assert "raw counts" not in caplog.text
    assert normalised.genes_ == raw.genes_
    # the same model scores both alike; two models trained on them differ by float rounding,
    # which training amplifies (by thread count too), so they are compared by ranking
    assert_scores_match(raw.evaluate(log1p_normalised(target)).scores, scores)
    for name in ("scaled", "mmd"):
        assert spearmanr(scores[name], expected[name]).statistic > 0.95, name


def test_raw_count_files_are_accepted_and_logged(cli, caplog, clean) -> None:
    with caplog.at_level(logging.INFO, logger="acsleuth"):
        cells = cli().accepted()
    assert "target: X looks like raw counts" in caplog.text
    assert_default_score_matches(cells, clean)


# --------------------------------------------------------------------------- genes


def test_no_shared_gene_is_refused_suggesting_the_same_kind_of_names(model, target, cli) -> None:
    target.var_names = [f"ENSG{i:05d}" for i in range(target.n_vars)]
    message = r"target: none of the 50 panel genes .* among its var_names .* same kind of var_names"
    with pytest.raises(DataError, match=message):
        model.score(target)
    cli(target=cli.write("renamed.h5ad", target)).refused(message)


def test_partial_gene_overlap_warns_how_many_are_missing_and_fills_them_with_zeros(
    model, target, cli, clean
) -> None:
    partial = target[:, :30].copy()
    message = r"target: 30 of the 50 panel genes were found .* the 20 missing .* filled with zeros"
    with pytest.warns(UserWarning, match=message):
        scores = model.evaluate(partial).scores
    zeroed = dense(target)
    zeroed[:, 30:] = 0
    assert_scores_match(scores, model.evaluate(with_x(target, zeroed)).scores)
    with pytest.warns(UserWarning, match=message):
        cli(target=cli.write("partial.h5ad", partial)).accepted()


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("side", "shape"),
    [
        ("reference", "0 cells"),
        ("reference", "0 genes"),
        ("target", "0 cells"),
        ("target", "0 genes"),
    ],
)
def test_empty_data_is_refused(model, reference, target, cli, side, shape) -> None:
    adata = {"reference": reference, "target": target}[side]
    empty = adata[:0].copy() if shape == "0 cells" else adata[:, :0].copy()
    message = (
        rf"{side} has {empty.n_obs} cells x {empty.n_vars} genes; it needs at least one of each"
    )
    with pytest.raises(DataError, match=message):
        FastACsleuth().fit(empty) if side == "reference" else model.score(empty)
    cli(**{side: cli.write("empty.h5ad", empty)}).refused(message)


def test_a_single_reference_cell_is_refused(reference, cli) -> None:
    message = r"reference: 1 cell\(s\); module I needs at least 2 normal cells"
    with pytest.raises(ValueError, match=message):
        FastACsleuth().fit(reference[:1].copy())
    cli(reference=cli.write("one.h5ad", reference[:1].copy())).refused(message)


def test_a_single_target_cell_is_refused_by_the_mmd_score_and_scored_by_scaled(
    model, target, cli, clean
) -> None:
    message = r"target: 1 cell\(s\); the MMD score .* needs at least 4 target cells \(score more cells together, or use score='scaled'"
    one = target[:1].copy()
    with pytest.raises(ValueError, match=message):
        model.score(one)
    with pytest.raises(ValueError, match=message):
        tl.score_anomalies(one, model)
    scaled = model.evaluate(one, score="scaled")
    np.testing.assert_allclose(scaled.score, clean["scaled"][:1], rtol=1e-5)
    assert not scaled.anomaly.any()  # one cell: no mixture to call it from
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one anomaly: no 0/0 in its principal components
        alone = model.subtype(dense(one))
    assert alone.n_subtypes == 1 and np.isfinite(alone.embedding).all()
    cli(target=cli.write("one.h5ad", one)).refused(message)


def test_fewer_cells_than_the_batch_size_are_accepted(reference, target, cli) -> None:
    small_ref, small_tgt = reference[:20].copy(), target[::10].copy()
    out = FastACsleuth(batch_size=32).run(small_ref, small_tgt.copy())
    assert np.isfinite(out.obs["acsleuth_score"]).all() and out.n_obs == 10
    cells = cli(
        reference=cli.write("ref20.h5ad", small_ref), target=cli.write("tgt10.h5ad", small_tgt)
    ).accepted()
    assert len(cells) == 10


def test_all_zero_cells_and_genes_get_finite_scores(reference, target, cli) -> None:
    ref_x, tgt_x = dense(reference), dense(target)
    ref_x[:, 5] = ref_x[7] = 0  # a gene no cell expresses, a cell with no counts (total 0)
    tgt_x[:, 5] = tgt_x[7] = 0
    zero_ref, zero_tgt = (
        with_x(reference, sp.csr_matrix(ref_x)),
        with_x(target, sp.csr_matrix(tgt_x)),
    )
    source = prepare(zero_tgt)
    assert source.log_normalize and not source.rows(np.array([7])).any()
    # highly variable genes skip the zero-variance gene
    assert "gene_5" not in highly_variable_genes(prepare(zero_ref), 40)
    for n_top_genes, kept in ((3000, True), (40, False)):  # all 50 genes, or 40 chosen
        model = FastACsleuth(n_top_genes=n_top_genes).fit(zero_ref)
        scores = model.evaluate(zero_tgt).scores
        assert all(np.isfinite(s).all() for s in scores.values())
        assert ("gene_5" in model.genes_) == kept
    cli(
        reference=cli.write("zero_ref.h5ad", zero_ref), target=cli.write("zero_tgt.h5ad", zero_tgt)
    ).accepted()


# --------------------------------------------------------------------------- names


def test_duplicate_cell_names_are_warned_and_made_unique(
    model, reference, target, cli, clean
) -> None:
    target.obs_names = ["cell"] * 50 + [f"c{i}" for i in range(50)]
    message = r"target: 49 cell names repeat earlier ones; acsleuth makes them unique .*obs_names_make_unique"
    with pytest.warns(UserWarning, match=message):
        scores = model.evaluate(target).scores
    assert_scores_match(scores, clean)
    with pytest.warns(UserWarning, match=message):
        tl.score_anomalies(target, model)
    assert list(target.obs_names[:2]) == ["cell", "cell"]  # the caller's names are kept
    with pytest.warns(UserWarning, match=message):
        cells = cli(target=cli.write("dup.h5ad", target)).accepted()
    assert list(cells.index[:2]) == ["cell", "cell"]


def test_duplicate_gene_names_are_warned_and_made_unique(reference, target, cli) -> None:
    names = list(reference.var_names)
    names[6] = names[5]  # gene_6 becomes a second gene_5
    reference.var_names = target.var_names = names
    message = (
        r"1 gene names repeat earlier ones; acsleuth makes them unique .*var_names_make_unique"
    )
    with pytest.warns(UserWarning, match=f"reference: {message}"):
        model = FastACsleuth().fit(reference)
    assert model.genes_[5:7] == ["gene_5", "gene_5-1"]
    with pytest.warns(UserWarning, match=f"target: {message}"):
        assert np.isfinite(model.score(target)).all()
    with pytest.warns(UserWarning, match=message):
        cli(
            reference=cli.write("dup_ref.h5ad", reference), target=cli.write("dup_tgt.h5ad", target)
        ).accepted()


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64, np.float16])
def test_integer_float64_and_float16_inputs_score_like_float32(
    model, target, cli, clean, dtype
) -> None:
    cast = with_x(target, dense(target).astype(dtype))
    assert_scores_match(model.evaluate(cast).scores, clean)
    cells = cli(target=cli.write("cast.h5ad", cast)).accepted()
    assert_default_score_matches(cells, clean)


@pytest.mark.parametrize("storage", ["csr", "csc", "dense"])
def test_csr_csc_dense_and_backed_inputs_score_alike(model, target, cli, clean, storage) -> None:
    convert = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[storage]
    stored = with_x(target, convert(dense(target)))
    assert_scores_match(model.evaluate(stored).scores, clean)
    path = cli.folder / cli.write("stored.h5ad", stored)
    backed = ad.read_h5ad(path, backed="r")
    try:
        assert_scores_match(model.evaluate(backed).scores, clean)
    finally:
        backed.file.close()
    cells = cli(target="stored.h5ad").accepted()  # the command line reads files backed
    assert_default_score_matches(cells, clean)


# --------------------------------------------------------------------------- files


def _damaged(folder: Path, target: ad.AnnData) -> bytes:
    """A gzip-compressed dense h5ad whose first chunk of X is overwritten."""
    path = folder / "scratch.h5ad"
    with_x(target, dense(target)).write_h5ad(path, compression="gzip")
    with h5py.File(path, "r") as f:
        offset = f["X"].id.get_chunk_info(0).byte_offset
    content = bytearray(path.read_bytes())
    content[offset + 10 : offset + 60] = b"\xff" * 50
    path.unlink()
    return bytes(content)


BAD_FILES = {
    "truncated": (
        lambda folder, good: good[: len(good) // 2],
        r"truncated file.* damaged or truncated",
    ),
    "text": (lambda folder, good: b"cell,gene_0\nc1,3\n", r"it is not an HDF5 file"),
    "png": (lambda folder, good: b"\x89PNG\r\n\x1a\n" + bytes(200), r"it is not an HDF5 file"),
    "empty": (lambda folder, good: b"", r"it is not an HDF5 file"),
    "hdf5 without anndata": (None, r"an HDF5 file without AnnData's obs and var group"),
    "damaged": (None, r"X could not be read \(.*\); the file is damaged"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("side", ["reference", "target"])
def test_a_truncated_damaged_or_non_h5ad_file_is_refused(model, target, cli, kind, side) -> None:
    make, message = BAD_FILES[kind]
    path = cli.folder / "bad.h5ad"
    if kind == "hdf5 without anndata":
        with h5py.File(path, "w") as f:
            f["counts"] = np.zeros((3, 3))
    elif kind == "damaged":
        path.write_bytes(_damaged(cli.folder, target))
    else:
        path.write_bytes(make(cli.folder, (cli.folder / "tgt.h5ad").read_bytes()))
    fix = r"(write it with adata\.write_h5ad|copy it again)"
    with pytest.raises(DataError, match=f"{message}.*{fix}"):
        adata = read(path, backed=True)  # only damage inside X gets past this
        try:
            FastACsleuth().fit(adata) if side == "reference" else model.score(adata)
        finally:
            adata.file.close()
    if kind != "damaged":  # damage inside X is found when X is read, not when the file is opened
        with pytest.raises(
            DataError, match=f"bad.h5ad could not be read as .h5ad.*{message}.*{fix}"
        ):
            read(path)
    cli(**{side: "bad.h5ad"}).refused(f"{message}.*{fix}")


def test_a_path_that_does_not_exist_is_refused_listing_the_formats(cli) -> None:
    message = r"nope\.h5ad does not exist; pass an AnnData object, a \.h5ad file"
    with pytest.raises(DataError, match=message):
        FastACsleuth().fit(cli.folder / "nope.h5ad")
    cli(target="nope.h5ad").refused(message)
    cli(reference="nope.h5ad").refused(message)


def test_debug_lets_the_error_through_with_its_traceback(cli) -> None:
    (cli.folder / "bad.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="it is not an HDF5 file"):
        cli("--debug", target="bad.h5ad")
    assert not cli.out.exists()


# --------------------------------------------------------------------------- settings


def test_a_missing_batch_key_is_refused_naming_the_columns(model, reference, target, cli) -> None:
    message = rf"target: batch_key 'nope' is not an obs column \(columns: {COLUMNS}\)"
    with pytest.raises(KeyError, match=message):
        model.evaluate(target, batch_key="nope")
    with pytest.raises(KeyError, match=message):
        model.run(reference, target, batch_key="nope")
    assert "acsleuth_score" not in target.obs
    cli("--batch-key", "nope").refused(message)


def test_more_subtypes_than_anomalies_are_lowered_with_a_warning(
    model, reference, target, cli
) -> None:
    message = r"n_subtypes=50 is more than the 10 anomalies called; making 10 subtype\(s\) instead"
    with pytest.warns(UserWarning, match=message):
        model.run(reference, target, anomaly_ratio=0.1, n_subtypes=50)
    assert target.uns["acsleuth"]["n_subtypes"] == 10 and target.obs["acsleuth_anomaly"].sum() == 10
    with pytest.warns(UserWarning, match=message):
        cells = cli("--n-subtypes", "50", "--anomaly-ratio", "0.1").accepted()
    assert cells["subtype"].notna().sum() == 10 and "10 called anomalous, 10 subtypes" in cli.stdout


@pytest.mark.parametrize("n_subtypes", ["abc", "0", "-2", "2.5"])
def test_a_bad_n_subtypes_is_refused(model, target, cli, n_subtypes) -> None:
    message = (
        r"n_subtypes: .* is not a number of subtypes \(pass a positive integer, e\.g\. 5, or 'auto'"
    )
    value = {"abc": "abc", "0": 0, "-2": -2, "2.5": 2.5}[n_subtypes]
    with pytest.raises(ValueError, match=message):
        model.subtype(dense(target[:20]), n_subtypes=value)
    target.obs["acsleuth_anomaly"] = np.arange(target.n_obs) < 20
    with pytest.raises(ValueError, match=message):
        tl.subtype_anomalies(target, model, n_subtypes=value)
    cli("--n-subtypes", n_subtypes).refused(message)


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.1", "nan"])
def test_an_anomaly_ratio_outside_0_1_is_refused(model, reference, target, cli, ratio) -> None:
    message = r"anomaly_ratio must be in \(0, 1\) or None .* \(pass the expected fraction of anomalous cells"
    with pytest.raises(ValueError, match=message):
        FastACsleuth(anomaly_ratio=float(ratio))
    with pytest.raises(ValueError, match=message):
        model.run(reference, target, anomaly_ratio=float(ratio))
    assert "acsleuth_score" not in target.obs and model.params["anomaly_ratio"] is None
    cli("--anomaly-ratio", ratio).refused(message)
