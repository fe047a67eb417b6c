"""What the pool tests share: tasks run by name, job and outcome helpers, a gate that
lets tests see tasks start and release them, and a fixture that starts prefork pools
and reaps what they leave behind."""

from __future__ import annotations

import itertools
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bootkit_amqp_consumer.errors import SoftTimeLimitExceededError
from bootkit_amqp_consumer.execution import failure
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pool_process import ProcessPool

TIMEOUT = 10.0  # every wait below gives up after this long
RESPAWN = 1.0  # RELIABILITY P3/P7: a dead slot is replaced within this


# Tasks: plain functions, run by `run_task` the way the real runner will run them.


def add(a: int, b: int) -> int:
    return a + b


def whoami() -> int:
    return os.getpid()


def block(started_w: int, release_r: int, label: str) -> int:
    """Announce "<pid> <label>" on `started_w`, then wait for a byte on `release_r`."""
    os.write(started_w, f"{os.getpid()} {label}\n".encode())
    os.read(release_r, 1)
    return os.getpid()


def nap(seconds: float) -> str:
    time.sleep(seconds)  # the workload: a task running past its limits
    return "woke"


def nap_and_clean_up(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceededError:
        return "cleaned up"
    return "woke"


def exit_now(code: int) -> None:
    os._exit(code)


def fork_grandchild_then_block(started_w: int, release_r: int, label: str) -> int:
    """Leave a grandchild holding every inherited fd (the pool's pipes too), then block."""
    if os.fork() == 0:
        # Bounded, so a failing test leaves no process behind for long.
        if select.select([release_r], [], [], TIMEOUT)[0]:
            os.read(release_r, 1)
        os._exit(0)
    return block(started_w, release_r, label)


def unpicklable() -> Callable[[], None]:
    return lambda: None


def fail(message: str) -> None:
    raise ValueError(message)


def signal_state() -> dict[str, Any]:
    return {
        "sigint": signal.getsignal(signal.SIGINT),
        "sigterm": signal.getsignal(signal.SIGTERM),
        "sigusr2": signal.getsignal(signal.SIGUSR2),
        "wakeup_fd": signal.set_wakeup_fd(-1),
    }


TASKS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        add,
        whoami,
        block,
        nap,
        nap_and_clean_up,
        exit_now,
        fork_grandchild_then_block,
        unpicklable,
        fail,
        signal_state,
    )
}


def run_task(job: Job) -> Outcome:
    """The test runner: call the task named by the job; an exception becomes a FAILURE."""
    started = time.monotonic()
    try:
        result = TASKS[job.name](*job.args, **job.kwargs)
    except Exception as exc:
        return failure(job.id, exc, time.monotonic() - started)
    return Outcome(job.id, "SUCCESS", result=result, runtime=time.monotonic() - started)


# Helpers.

_ids = itertools.count()


def make_job(
    name: str, *args: Any, soft_time_limit: float | None = None, time_limit: float | None = None
) -> Job:
    return Job(
        id=f"{name}-{next(_ids)}",
        name=name,
        args=args,
        kwargs={},
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
    )


class Outcomes:
    """The `done` callback: collects outcomes, with when and on which thread they came."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.received: dict[str, Outcome] = {}
        self.at: dict[str, float] = {}
        self.threads: set[str] = set()

    def __call__(self, outcome: Outcome) -> None:
        with self._cond:
            assert outcome.job_id not in self.received, f"done called twice for {outcome.job_id}"
            self.received[outcome.job_id] = outcome
            self.at[outcome.job_id] = time.monotonic()
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def get(self, job: Job) -> Outcome:
        with self._cond:
            assert self._cond.wait_for(lambda: job.id in self.received, TIMEOUT), job.id
            return self.received[job.id]

    def wait_count(self, n: int) -> list[Outcome]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.received) >= n, TIMEOUT)
            return list(self.received.values())

    def wait_all(self, jobs: list[Job]) -> list[Outcome]:
        return [self.get(job) for job in jobs]


class Gate:
    """Pipes inherited by forked children: tasks say they started and wait to be released."""

    def __init__(self) -> None:
        self.started_r, self.started_w = os.pipe()
        self.release_r, self.release_w = os.pipe()
        self._buffer = b""

    def job(self, label: str, name: str = "block") -> Job:
        return make_job(name, self.started_w, self.release_r, label)

    def started(self) -> tuple[int, str]:
        """Wait for the next task to start; return its (pid, label)."""
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.started_r], [], [], max(left, 0))
            assert readable, "no task started in time"
            self._buffer += os.read(self.started_r, 4096)
        line, self._buffer = self._buffer.split(b"\n", 1)
        pid, label = line.decode().split(" ", 1)
        return int(pid), label

    def release(self, n: int = 1) -> None:
        os.write(self.release_w, b"x" * n)

    def close(self) -> None:
        for fd in (self.started_r, self.started_w, self.release_r, self.release_w):
            os.close(fd)


def wait_exited(pid: int) -> None:
    """Wait (with a timeout) until process `pid` has exited; it may not be reaped yet."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # exited and already reaped
        return
    try:
        readable, _, _ = select.select([fd], [], [], TIMEOUT)
        assert readable, f"process {pid} still running"
    finally:
        os.close(fd)


def assert_reaped(pid: int) -> None:
    """`pid` is neither running nor a zombie: its parent has waited for it."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def flush(pool: ProcessPool, outcomes: Outcomes) -> int:
    """Run one job to the end and return the pid that ran it.

    Anything the supervisor saw before (a child's exit) is handled by the time this job's
    outcome is reported, so `pids()` is settled afterwards.
    """
    job = make_job("whoami")
    pool.submit(job, outcomes)
    result = outcomes.get(job).result
    assert isinstance(result, int)
    return result


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.close()


@pytest.fixture
def start_pool() -> Iterator[Callable[[int], ProcessPool]]:
    """Start prefork pools; whatever a test leaves running is killed and reaped after it."""
    pools: list[ProcessPool] = []

    def start(size: int) -> ProcessPool:
        pool = ProcessPool(run_task, size)
        pool.start()
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pids = pool.pids()
        pool.stop(wait=False)
        for pid in pids:
            assert_reaped(pid)
