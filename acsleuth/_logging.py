"""The package logger, per-stage timers and progress bars."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger("acsleuth")
T = TypeVar("T")


@contextmanager
def stage_timer(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Time a stage into ``timings[stage]`` (seconds) and log it."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
        logger.info("%s: %.2f s", stage, timings[stage])


def progress(items: Iterable[T] | None, *, desc: str, total: int | None = None, verbose: bool = True) -> tqdm:
    """A tqdm bar (updated by hand when ``items`` is None), silent when ``verbose`` is False or
    stderr is not a terminal."""
    return tqdm(
        items, desc=desc, total=total, leave=False, dynamic_ncols=True,
        disable=not verbose or not sys.stderr.isatty(),
    )
