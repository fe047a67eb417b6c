"""What both prefork intakes share about their forked children: a file descriptor
that says a child has exited, signalling one safely, and the outcome of a task whose
child died."""

from __future__ import annotations

import contextlib
import os
import signal
from multiprocessing.context import ForkProcess
from typing import Protocol

from bootkit_amqp_consumer.errors import TimeLimitExceededError, WorkerLostError
from bootkit_amqp_consumer.job import Outcome


def exit_fd(process: ForkProcess) -> int:
    """A pidfd where the kernel has them, else the process sentinel (a pipe)."""
    # The sentinel pipe stays open while any process holds its write end, so a task
    # that forked a grandchild would hide its own death; a pidfd does not.
    assert process.pid is not None
    try:
        return os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return process.sentinel


class Forked(Protocol):
    process: ForkProcess
    pid: int


def send_signal(child: Forked, signum: signal.Signals) -> None:
    # exitcode polls waitpid: a child already reaped must not be signalled (pid reuse).
    if child.process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)


def describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def died(
    job_id: str,
    name: str,
    *,
    pid: int,
    killed_for: str | None,
    time_limit: float | None,
    runtime: float,
    how: str,
) -> Outcome:
    """The outcome of task `job_id` whose process `pid` died (`how`): a time-limit
    failure when it was killed for its limit, else lost (terminated, or worker lost)."""
    task = f"task {name}[{job_id}]"
    if killed_for == "time_limit":
        exc_type, lost = TimeLimitExceededError.__name__, False
        message = f"{task} ran past its time limit of {time_limit or 0:g}s and was killed ({how})"
    elif killed_for == "terminated":
        exc_type, lost = "Terminated", True
        message = f"{task} was terminated ({how})"
    else:
        exc_type, lost = WorkerLostError.__name__, True
        message = f"process {pid} running {task} exited prematurely ({how})"
    return Outcome(
        job_id,
        "FAILURE",
        runtime=runtime,
        exc_type=exc_type,
        exc_module=WorkerLostError.__module__,
        exc_message=message,
        lost=lost,
    )
