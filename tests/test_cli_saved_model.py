"""``acsleuth run --model``: every option is honoured (the batch key reaches the scores) or refused."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _helpers import run_in

import acsleuth
from acsleuth import tl
from acsleuth.cli import main


@pytest.fixture
def trained(cli_files):
    """``cli_files`` with ``fit/model``, a model trained by the command."""
    assert run_in(cli_files, "--quiet", "--no-correct", out="fit") == 0
    return cli_files


def _score(folder, out: str, *extra: str) -> np.ndarray:
    assert (
        main(
            [
                "run",
                "--model",
                str(folder / "fit" / "model"),
                "--target",
                str(folder / "tgt.h5ad"),
                "--out",
                str(folder / out),
                "--device",
                "cpu",
                "--quiet",
                *extra,
            ]
        )
        == 0
    )
    return ad.read_h5ad(folder / out / "target.h5ad").obs["acsleuth_score"].to_numpy()


def test_a_saved_model_scores_with_the_batch_key_like_the_api(trained) -> None:
    with_key = _score(trained, "with_key", "--batch-key", "batch")
    without = _score(trained, "without")
    model = acsleuth.ACsleuth.load(trained / "fit" / "model", device="cpu")
    target = ad.read_h5ad(trained / "tgt.h5ad")
    tl.score_anomalies(target, model, batch_key="batch")
    np.testing.assert_allclose(
        with_key, target.obs["acsleuth_score"].to_numpy(), rtol=1e-6, atol=1e-9
    )
    assert np.abs(with_key - without).max() > 1e-3  # the key changes the scores: it was used
    annotated = ad.read_h5ad(trained / "with_key" / "target.h5ad")
    assert annotated.uns["acsleuth"]["params"]["batch_key"] == "batch"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--epochs", "prepare=1"),
        ("--n-top-genes", "10"),
        ("--checkpoint-every", "2"),
        ("--resume", None),
        ("--checkpoint-dir", "ck"),
        ("--seed", "3"),
    ],
)
def test_a_training_option_with_a_saved_model_is_refused_not_ignored(
    trained, capsys, option, value
) -> None:
    extra = [option] if value is None else [option, value]
    rc = main(
        [
            "run",
            "--model",
            str(trained / "fit" / "model"),
            "--target",
            str(trained / "tgt.h5ad"),
            "--out",
            str(trained / "refused"),
            "--device",
            "cpu",
            "--quiet",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert option in err and "--model" in err, err
    assert not (trained / "refused").exists() and not (trained / "ck").exists()
