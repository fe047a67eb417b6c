"""Tasks for the worker's end-to-end tests, and the ledger they keep.

Executions are counted outside the worker: a task appends one line per thing it did
(``start``, ``done``, ...) to the ledger file named by its first argument, so a test
counts starts and completions exactly, across pool processes and worker restarts.
The worker loads ``e2e_tasks:app``; a test's client builds its own with `make_app`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootkit_amqp_consumer import App, SoftTimeLimitExceededError, Task

ADD = "e2e.add"
FAIL = "e2e.fail"
WORK = "e2e.work"
WORK_LATE = "e2e.work_late"
RETRYING = "e2e.retrying"
SOFT_LIMITED = "e2e.soft_limited"
HARD_LIMITED = "e2e.hard_limited"
EXIT_PROCESS = "e2e.exit_process"

RETRIES = 2  # max_retries of RETRYING
RETRY_COUNTDOWN = 0.3
SOFT_LIMIT = 0.5  # soft_time_limit of SOFT_LIMITED, seconds
HARD_LIMIT = 0.5  # time_limit of HARD_LIMITED, seconds


@dataclass(frozen=True)
class Entry:
    """One ledger line: what happened to which task, in which process, when (unix time)."""

    event: str
    tag: str
    pid: int
    at: float


def note(ledger: str, event: str, tag: str) -> None:
    """Append one line; O_APPEND writes this short are atomic between processes."""
    line = f"{event} {tag} {os.getpid()} {time.time()!r}\n"
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_ledger(ledger: Path) -> list[Entry]:
    """Every line written so far, in order."""
    try:
        text = ledger.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        event, tag, pid, at = line.split(" ")
        entries.append(Entry(event, tag, int(pid), float(at)))
    return entries


def _work(ledger: str, tag: str, seconds: float = 0.0) -> str:
    note(ledger, "start", tag)
    time.sleep(seconds)
    note(ledger, "done", tag)
    return tag


def make_app(name: str = "e2e", **options: Any) -> App:
    """An App with every e2e task registered; `options` go to `App`."""
    app = App(name, **options)

    @app.task(name=ADD)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=FAIL)
    def fail(message: str) -> None:
        raise ValueError(message)

    app.task(name=WORK)(_work)
    app.task(name=WORK_LATE, acks_late=True)(_work)

    @app.task(name=RETRYING, bind=True, max_retries=RETRIES)
    def retrying(self: Task[Any, Any], ledger: str, tag: str) -> None:
        note(ledger, "run", tag)
        self.retry(countdown=RETRY_COUNTDOWN)

    @app.task(name=SOFT_LIMITED, soft_time_limit=SOFT_LIMIT)
    def soft_limited(ledger: str, tag: str, seconds: float) -> str:
        note(ledger, "start", tag)
        try:
            time.sleep(seconds)
        except SoftTimeLimitExceededError:
            note(ledger, "soft", tag)
            return "caught the soft limit"
        note(ledger, "done", tag)
        return "finished"

    @app.task(name=HARD_LIMITED, time_limit=HARD_LIMIT)
    def hard_limited(ledger: str, tag: str, seconds: float) -> str:
        return _work(ledger, tag, seconds)

    @app.task(name=EXIT_PROCESS, acks_late=True)
    def exit_process(ledger: str, tag: str) -> None:
        note(ledger, "start", tag)
        os._exit(1)

    return app


app = make_app()
