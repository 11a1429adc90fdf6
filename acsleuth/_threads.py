"""How many CPU threads acsleuth's torch work uses (``n_jobs``, ``--threads``).

torch runs its CPU ops (and acsleuth's C++ kernels) on an OpenMP pool. The default is the
cores this process may use (its CPU affinity mask: ``taskset``, cgroup cpusets), not
``os.cpu_count()``. It does not follow the machine's load: a count that changed with other
processes would let two runs of the same command differ. Beside another busy process on the
same cores, parallel regions wait for workers the scheduler has paused (the issue-17 report
measured a saved-model scoring run 3.7x slower at the full core count than at one thread);
most of that was spin-waiting, which ``import acsleuth`` turns off (``OMP_WAIT_POLICY``,
:mod:`acsleuth`). ``benchmarks/threads.py`` measures it.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_chosen = contextvars.ContextVar("acsleuth_threads_chosen", default=False)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity mask (``taskset``, cgroup cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The thread count when ``n_jobs`` is None: every core of the affinity mask."""
    return usable_cores()


def resolve_threads(n_jobs: int | None) -> int:
    """``n_jobs`` as a thread count: None is :func:`default_threads`, -1 every usable core,
    a positive number itself."""
    from ._constants import check_n_jobs

    check_n_jobs(n_jobs)
    if n_jobs is None:
        return default_threads()
    return usable_cores() if n_jobs == -1 else int(n_jobs)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU work on ``n`` threads inside, restoring the previous count after."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def with_threads(method: F) -> F:
    """Run a model method on ``resolve_threads(self.params["n_jobs"])`` threads; a method called
    from another keeps the count the outer one chose (the load changes while we run)."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        if _chosen.get():
            return method(self, *args, **kwargs)
        token = _chosen.set(True)
        try:
            with torch_threads(resolve_threads(self.params.get("n_jobs"))):
                return method(self, *args, **kwargs)
        finally:
            _chosen.reset(token)

    return wrapper  # type: ignore[return-value]
