"""The package logger, per-stage timers and progress (bars on a terminal, log lines elsewhere).

acsleuth's records go to stderr through one handler. In Python it follows scanpy's verbosity
(``sc.settings.verbosity``: 2 ``"info"`` shows stage starts and ends, 4 ``"debug"`` their
sub-stages; warnings only when scanpy is not imported); the command line sets the level
itself with :func:`set_verbosity` (``--quiet``, ``--verbose``).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger("acsleuth")
T = TypeVar("T")
HEARTBEAT_S = 30.0
"""Seconds between two progress lines of one training loop when stderr is not a terminal."""

_SCANPY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.INFO}
_path: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "acsleuth_stage_path", default=()
)
NEST = " > "
"""Joins a stage's name to the stages it runs in, in the keys of :func:`stage_timer`."""


class _StderrHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` at the level :func:`set_verbosity` chose,
    else at scanpy's verbosity."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed_level: int | None = None
        self.setFormatter(logging.Formatter("%(asctime)s acsleuth: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < (self.fixed_level if self.fixed_level is not None else scanpy_level()):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # a closed stream must not end the run
            self.handleError(record)


_handler = _StderrHandler()
logger.addHandler(_handler)
if logger.level == logging.NOTSET:
    logger.setLevel(logging.DEBUG)  # the handler filters; records still propagate to the root


def scanpy_level() -> int:
    """The logging level matching scanpy's verbosity; WARNING when scanpy is not imported."""
    scanpy = sys.modules.get("scanpy")
    if scanpy is None:
        return logging.WARNING
    try:
        verbosity = int(scanpy.settings.verbosity)
    except (AttributeError, TypeError, ValueError):
        return logging.WARNING
    return _SCANPY_LEVELS.get(verbosity, logging.DEBUG)


def set_verbosity(level: int | None) -> None:
    """Log at ``level`` to stderr (``None``: follow scanpy's verbosity again)."""
    _handler.fixed_level = level


def stage_key(stage: str) -> str:
    """The key :func:`stage_timer` would give ``stage`` started here."""
    return NEST.join((*_path.get(), stage))


@contextmanager
def stage_timer(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Time a stage into ``timings`` (seconds) and log its start and end.

    A stage run inside others is keyed by their path, ``"outer > inner"`` (:data:`NEST`);
    the outermost stages by their own names. Outermost stages log at INFO, inner ones at
    DEBUG (indented).
    """
    path, name = _path.get(), stage_key(stage)
    level, indent = (logging.INFO if not path else logging.DEBUG), "  " * len(path)
    logger.log(level, "%s%s ...", indent, stage)
    token = _path.set((*path, stage))
    start = time.perf_counter()
    try:
        yield
    finally:
        _path.reset(token)
        elapsed = time.perf_counter() - start
        timings[name] = timings.get(name, 0.0) + elapsed
        logger.log(level, "%s%s: %.2f s", indent, stage, elapsed)


class _Heartbeat:
    """A progress counter for non-terminals: one INFO line at most every :data:`HEARTBEAT_S`
    seconds (the tqdm methods that the training loops use)."""

    def __init__(self, items: Iterable[T] | None, desc: str, total: int | None) -> None:
        self.items, self.desc, self.total = items, desc, total
        self.n, self.postfix = 0, ""
        self.start = self.last = time.perf_counter()

    def __iter__(self) -> Iterator[T]:
        for item in self.items:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= HEARTBEAT_S:
            self.last = now
            of = f"/{self.total}" if self.total is not None else ""
            logger.info(
                "  %s: %d%s after %.0f s%s", self.desc, self.n, of, now - self.start, self.postfix
            )

    def set_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = " (" + ", ".join(f"{k} {v}" for k, v in values.items()) + ")"

    def close(self) -> None:
        """Nothing to release (tqdm's interface)."""


def progress(
    items: Iterable[T] | None, *, desc: str, total: int | None = None, verbose: bool = True
) -> tqdm | _Heartbeat:
    """A tqdm bar on a terminal (updated by hand when ``items`` is None); elsewhere, when
    ``verbose``, a line every :data:`HEARTBEAT_S` seconds; nothing when not ``verbose``."""
    if verbose and not sys.stderr.isatty():
        return _Heartbeat(items, desc, total)
    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=not verbose)
