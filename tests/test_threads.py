"""Thread counts: the affinity mask sets the default; the machine's load does not."""

from __future__ import annotations

import os

import pytest
import torch

from acsleuth import _threads


def test_usable_cores_is_the_affinity_mask() -> None:
    assert _threads.usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cores", "load"), [(2, 0.0), (2, 7.0), (4, 1.2)])
def test_the_default_is_the_affinity_mask_whatever_the_load(monkeypatch, cores, load) -> None:
    """Two runs of one command must not differ with the load (float sums follow the thread count)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert _threads.default_threads() == cores


def test_n_jobs_values(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert _threads.resolve_threads(-1) == 3 and _threads.resolve_threads(5) == 5
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_jobs must be a positive number of threads"):
            _threads.resolve_threads(bad)


def test_torch_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    with _threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_model_runs_on_n_jobs_threads_and_restores_the_count(monkeypatch) -> None:
    from _helpers import FastACsleuth

    import acsleuth.model.acsleuth as orchestration
    from acsleuth import datasets

    seen = []
    real = orchestration.evaluate_target

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(orchestration, "evaluate_target", spy)
    reference, target = datasets.synthetic(
        60, 40, 20, n_anomaly_types=1, anomaly_ratio=0.25, seed=0
    )
    with _threads.torch_threads(2):
        model = FastACsleuth(n_jobs=1, score="scaled").fit(reference)
        model.evaluate(target)
        assert torch.get_num_threads() == 2
    assert seen == [1]


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_acsleuth_makes_idle_openmp_threads_sleep_unless_told(given, expected) -> None:
    """A fresh interpreter: acsleuth sets OMP_WAIT_POLICY before torch loads OpenMP, and
    leaves a user's own value alone."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, acsleuth, torch; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == expected
