"""Logging: structlog events to stderr, as console lines or JSON.

structlog is imported on the first event, not at import time, so commands that log
nothing (``bootkit graph``) do not pay for it. `configure` is called once by the CLI;
until then events use structlog's defaults.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

# The one module-level mutable value: the pending logging setup (see STYLE, habit 3).
_setup: dict[str, Any] = {"wanted": None, "applied": None}


def configure(level: str = "info", fmt: str = "console") -> None:
    """Send events at `level` and above to stderr in format `fmt` ("console" or "json")."""
    _setup["wanted"] = (level, fmt)
    if "structlog" in sys.modules:
        _apply()


def logger() -> FilteringBoundLogger:
    """The bootkit logger; imports and configures structlog on first use."""
    if _setup["wanted"] is not None and _setup["applied"] != _setup["wanted"]:
        _apply()
    import structlog

    bound: FilteringBoundLogger = structlog.get_logger("bootkit")
    return bound


def _apply() -> None:
    import structlog

    level, fmt = _setup["wanted"]
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_LineWriter.factory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _setup["applied"] = _setup["wanted"]


class _LineWriter:
    """Writes each event's line and its newline in one write. structlog's PrintLogger
    prints them, which on Python's stderr (write-through) is two system calls: the
    lines of processes sharing a stderr (a prefork pool's parent and children) then
    ran together, a JSON line broken by another's."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lock = threading.Lock()

    @classmethod
    def factory(cls, file: TextIO) -> Callable[..., _LineWriter]:
        writer = cls(file)  # one for every logger: one lock for the file
        return lambda *args: writer

    def msg(self, message: str) -> None:
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    debug = info = warning = warn = error = critical = exception = fatal = failure = log = msg
