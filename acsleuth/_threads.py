"""How many CPU threads acsleuth's torch work uses (``n_jobs``, ``--threads``).

torch runs its CPU ops (and acsleuth's C++ kernels) on an OpenMP pool. When another process
keeps the same cores busy, every parallel region waits for workers the scheduler has paused,
and a run at the full core count was measured 3.7x slower than at one thread (issue 17). The
default therefore takes the cores this process may use (its affinity mask) minus the load
other processes already put on them.
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
    """The usable cores minus the cores other processes keep busy, at least 1.

    The busy share is the 1-minute load average scaled from the machine's cores to the usable
    ones (the load average counts the whole machine).
    """
    cores = usable_cores()
    try:
        load = os.getloadavg()[0] * cores / max(os.cpu_count() or cores, cores)
    except OSError:  # no load average on this system
        return cores
    return max(1, min(cores, round(cores - load)))


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
