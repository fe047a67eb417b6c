"""The prefork pool's child side: run jobs from the parent's pipe, one at a time.

The soft time limit arrives as SIGUSR1 and is raised inside the running task.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from bootkit_amqp_consumer.errors import SoftTimeLimitExceededError
from bootkit_amqp_consumer.execution import failure
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pools import Runner


class SoftLimit:
    """The child's SIGUSR1 handler: raises in the running task, once; ignored between jobs."""

    def __init__(self) -> None:
        self.job: Job | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        # Disarm before raising: at most one raise per job, so the guard in _run that
        # catches it is never interrupted by a second one. A signal meant for the
        # previous job (sent before the parent read its outcome) is handled before
        # recv returns the next job, so it always finds the handler disarmed.
        job, self.job = self.job, None
        if job is not None:
            raise SoftTimeLimitExceededError(
                f"task {job.name}[{job.id}] ran past its soft time limit ({job.soft_time_limit}s)"
            )


def become_child(parents: list[Any], mask: set[signal.Signals]) -> SoftLimit:
    """A forked pool child's first steps: close what is the parent's (`parents`: fds and
    objects with a ``close``), take the parent's signal handlers down, ignore Ctrl-C
    (it reaches the whole group), die on SIGTERM, raise the soft limit on SIGUSR1, and
    unblock the signals the parent blocked across fork (`mask`). Returns the handler."""
    for item in parents:
        if isinstance(item, int):
            os.close(item)
        else:
            item.close()
    soft_limit = SoftLimit()
    signal.set_wakeup_fd(-1)  # the parent's wakeup fd is the parent's alone
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):  # the parent's Python handlers
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, soft_limit)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return soft_limit


def child_main(
    conn: Connection,
    runner: Runner,
    parents: list[Connection | int],
    mask: set[signal.Signals],
) -> None:
    """Run jobs from `conn` until told to exit or the parent goes away (in the child)."""
    soft_limit = become_child(parents, mask)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        job: Job | None = pickle.loads(data)
        if job is None:
            return
        outcome = run(runner, job, soft_limit)
        try:
            payload = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result
            payload = pickle.dumps(failure(job.id, exc, outcome.runtime), pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(payload)
        except OSError:
            return


def run(runner: Runner, job: Job, soft_limit: SoftLimit) -> Outcome:
    """Run one job in the child with its soft limit armed, always returning an outcome."""
    started = time.monotonic()
    soft_limit.job = job
    try:
        try:
            return runner(job)
        finally:
            soft_limit.job = None
    # The runner turns task errors into outcomes; this catches its own bugs and a soft
    # limit that lands after the task returned but before the handler was disarmed.
    except Exception as exc:
        return failure(job.id, exc, time.monotonic() - started)
