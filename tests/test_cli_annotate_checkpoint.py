"""``acsleuth annotate --checkpoint-dir/--resume``: Ctrl-C keeps the training, --resume ends
with the output of an uninterrupted run, the checkpoint goes once --out is written (issue 19)."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

from acsleuth import datasets
from acsleuth.cli import main
from acsleuth.train import contrastive


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotate")
    ref, tgt = datasets.synthetic(
        100, 130, 30, n_types=3, n_anomaly_types=1, anomaly_ratio=0.3, seed=2
    )
    ref.write_h5ad(folder / "ref.h5ad")
    tgt.write_h5ad(folder / "tgt.h5ad")
    return folder


def _argv(folder, out: str, *extra: str) -> list[str]:
    return [
        "annotate",
        "--reference",
        str(folder / "ref.h5ad"),
        "--target",
        str(folder / "tgt.h5ad"),
        "--label-key",
        "cell_type",
        "--n-types",
        "4",
        "--epochs",
        "3",
        "--out",
        str(folder / out),
        *extra,
    ]


def test_interrupted_then_resumed_equals_uninterrupted(files, monkeypatch, capsys) -> None:
    ckpt = files / "ckpt"
    assert main(_argv(files, "whole.h5ad")) == 0
    real, calls = contrastive.step_loss, iter(range(1, 10_000))

    def interrupted(*args, **kwargs):
        if next(calls) == 2:  # the second epoch (one step an epoch: 130 cells, batch 256)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(contrastive, "step_loss", interrupted)
        assert main(_argv(files, "part.h5ad", "--checkpoint-dir", str(ckpt))) == 130
    err = capsys.readouterr().err
    assert "after 1 complete epoch(s)" in err and "--resume" in err
    assert (ckpt / "training.pt").is_file() and not (files / "part.h5ad").exists()
    assert main(_argv(files, "part.h5ad", "--checkpoint-dir", str(ckpt), "--resume")) == 0
    whole = anndata.read_h5ad(files / "whole.h5ad")
    part = anndata.read_h5ad(files / "part.h5ad")
    np.testing.assert_array_equal(
        whole.obsm["acsleuth_annot_proba"], part.obsm["acsleuth_annot_proba"]
    )
    assert not ckpt.exists()  # removed once --out was written


def test_resume_without_a_checkpoint_folder_is_refused(files, capsys) -> None:
    assert main(_argv(files, "x.h5ad", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume and --checkpoint-every need --checkpoint-dir" in err
    assert err.count("\n") == 1 and not (files / "x.h5ad").exists()
