"""The prefork pool: forked child processes, one job at a time each, watched by one thread.

The parent keeps pending jobs and hands each to an idle child over that child's pipe, so
a job never queues behind a busy child. One supervisor thread waits on every pipe, every
child's exit fd and a self-pipe (for submit/grow/stop), with the nearest time limit as
its timeout: it reads outcomes, enforces limits, reaps and replaces children.

While the consumer's loop `watch`es the pipes, the loop reads the outcomes itself
(`collect`) and the supervisor leaves the pipes alone: an outcome then reaches the
loop with no thread hand-off, and the next job goes out in the same turn.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkProcess
from typing import Literal

from bootkit import logger
from bootkit_amqp_consumer.errors import (
    WorkerError,
)
from bootkit_amqp_consumer.execution import failure
from bootkit_amqp_consumer.forked import describe, died, exit_fd, send_signal
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pool_child import child_main
from bootkit_amqp_consumer.pools import Done, Runner, report_outcome

KillReason = Literal["time_limit", "terminated"]


class ProcessPool:
    """N forked processes; enforces soft/hard time limits and replaces children that die."""

    kind = "prefork"

    def __init__(self, runner: Runner, size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one slot, got {size}")
        self.runner = runner
        self._wanted = size
        self._ctx = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._children: list[_Child] = []
        self._pending: deque[tuple[Job, Done, bytes]] = deque()
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._closing = False  # stop() was called: run what was submitted, then exit
        self._abandon = False  # stop(wait=False): kill everything, report nothing
        self._respawn_at: float | None = None  # a fork failed; try again then
        self._spawned = 0
        self._watched = False  # the caller's loop reads the pipes (watch/collect)
        # Children reaped while the loop watches: their pipes stay open until its next
        # `watch`, since it may be waiting on them now (a closed fd fails its select).
        self._reaped: list[_Child] = []

    @property
    def size(self) -> int:
        return self._wanted

    def start(self) -> None:
        """Fork the children and the supervisor; jobs can be submitted from now on."""
        with self._lock:
            if self._thread is not None or self._closing:
                raise WorkerError("the prefork pool was already started; create a new one")
            try:
                for _ in range(self._wanted):
                    self._spawn_locked()
            except BaseException:  # e.g. fork failed: leave no half-started pool behind
                for child in self._children:
                    send_signal(child, signal.SIGKILL)
                    child.process.join()
                    child.close()
                self._children.clear()
                raise
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._dispatch_locked()
            self._thread = threading.Thread(
                target=self._supervise, name="bootkit-prefork-supervisor", daemon=True
            )
            self._thread.start()

    def submit(self, job: Job, done: Done) -> None:
        """Queue `job`; it goes to the first idle child, now or when one frees up."""
        # Pickled here, outside the lock, so an unpicklable job fails in the caller.
        payload = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._closing:
                raise WorkerError(f"job {job.id} submitted to a stopped prefork pool")
            self._pending.append((job, done, payload))
            if self._thread is not None and self._dispatch_locked():
                # A new deadline: the supervisor must shorten its wait.
                self._wake_locked()

    def stop(self, *, wait: bool = True) -> None:
        """Stop; with `wait` every submitted job runs first, else children are killed now."""
        with self._lock:
            self._closing = True
            if not wait:
                self._abandon = True
                self._pending.clear()
                for child in self._children:
                    send_signal(child, signal.SIGKILL)
            thread = self._thread
            if thread is None:
                return
            self._wake_locked()
        if thread is not threading.current_thread():  # stop() from a done callback
            thread.join()

    def terminate(self, job_id: str, signum: int = signal.SIGTERM) -> bool:
        """Signal the child running `job_id`; it is reported lost ("Terminated")."""
        with self._lock:
            for child in self._children:
                if child.job is not None and child.job.id == job_id:
                    if child.killed_for is None:
                        child.killed_for = "terminated"
                        send_signal(child, signal.Signals(signum))
                    return True
        return False

    def grow(self, n: int) -> None:
        """Fork `n` more children now."""
        if n < 0:
            raise ValueError(f"grow() takes a positive count, got {n}")
        with self._lock:
            self._wanted += n
            if self._thread is not None:
                self._reconcile_locked()
                self._wake_locked()  # new pipes to watch

    def shrink(self, n: int) -> None:
        """Retire `n` children (never the last): idle ones now, busy ones after their job."""
        if n < 0:
            raise ValueError(f"shrink() takes a positive count, got {n}")
        with self._lock:
            self._wanted -= min(n, self._wanted - 1)
            if self._thread is not None:
                self._reconcile_locked()

    def active(self) -> list[str]:
        """Ids of the jobs running now."""
        with self._lock:
            return [child.job.id for child in self._children if child.job is not None]

    def watch(self) -> list[int]:
        """The children's pipes, for the caller's loop to watch and `collect` from."""
        with self._lock:
            self._close_reaped_locked()
            if not self._watched:
                self._watched = True
                self._wake_locked()  # the supervisor must stop waiting on them
            return [c.conn.fileno() for c in self._children if not c.broken]

    def collect(self, ready: Collection[int]) -> None:
        """Read the outcomes behind `ready`, hand out pending jobs, report (caller's thread)."""
        reports: list[tuple[Done, Outcome]] = []
        with self._lock:
            for child in list(self._children):
                # Check first: the supervisor may have read it before it learnt of the watch.
                if not child.broken and child.conn.fileno() in ready and _readable(child.conn):
                    self._receive_locked(child, reports)
            if self._dispatch_locked():
                self._wake_locked()  # a new deadline for the supervisor
            self._reconcile_locked()
            if self._abandon:
                reports = []
        for done, outcome in reports:
            report_outcome(done, outcome)

    def unwatch(self) -> None:
        """The supervisor reads the pipes again."""
        with self._lock:
            self._watched = False
            self._close_reaped_locked()
            self._wake_locked()

    def pids(self) -> list[int]:
        """Pids of the children not yet reaped (busy, idle or retiring)."""
        with self._lock:
            return [child.pid for child in self._children]

    # Everything below runs with self._lock held, mostly in the supervisor thread.

    def _spawn_locked(self) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        # The child closes what is the parent's: the parent's ends of its own and its
        # siblings' pipes (they would hide the parent's death from those children),
        # the wake pipe and the exit fds.
        parents: list[Connection | int] = [parent_end]
        parents += [fd for fd in (self._wake_r, self._wake_w) if fd >= 0]
        for child in self._children:
            parents += [child.conn, child.exit_fd]
        # Signals stay blocked across fork until the child has replaced the parent's
        # handlers; else a Ctrl-C there would write to the parent's wakeup fd.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        self._spawned += 1
        process = self._ctx.Process(
            target=child_main,
            args=(child_end, self.runner, parents, mask),
            name=f"bootkit-prefork-{self._spawned}",
            daemon=True,  # joined/terminated by multiprocessing at exit if stop() was skipped
        )
        try:
            process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child_end.close()
        assert process.pid is not None  # set by start()
        self._children.append(_Child(process, process.pid, parent_end, exit_fd(process)))

    def _dispatch_locked(self) -> bool:
        """Hand pending jobs to idle children; True when one of them has a time limit."""
        timed = False
        while self._pending:
            child = next((c for c in self._children if c.idle), None)
            if child is None:
                break
            job, done, payload = self._pending.popleft()
            try:
                child.conn.send_bytes(payload)
            except OSError:  # died idle; its exit fd will say so
                child.broken = True
                self._pending.appendleft((job, done, payload))
                continue
            child.begin(job, done)
            timed = timed or child.soft_at is not None or child.hard_at is not None
        return timed

    def _reconcile_locked(self) -> None:
        if self._abandon:
            return
        serving = [c for c in self._children if not c.retiring]
        surplus = len(serving) - self._wanted
        for child in reversed(serving):  # the newest first: dispatch favours the oldest
            if surplus <= 0:
                break
            if child.job is None:
                self._retire_locked(child)
                surplus -= 1
        draining = self._closing and not self._pending
        if not draining and (self._respawn_at is None or self._respawn_at <= time.monotonic()):
            self._respawn_at = None
            try:
                while sum(not c.retiring for c in self._children) < self._wanted:
                    self._spawn_locked()
            except OSError as exc:  # EAGAIN/ENOMEM from fork: keep running, retry soon
                logger().error("pool_spawn_failed", error=str(exc), retry_in=1.0)
                self._respawn_at = time.monotonic() + 1.0
        self._dispatch_locked()
        if self._closing and not self._pending:
            for child in self._children:
                if child.idle:
                    self._retire_locked(child)

    def _retire_locked(self, child: _Child) -> None:
        child.retiring = True
        try:
            child.conn.send_bytes(pickle.dumps(None))
        except OSError:
            child.broken = True

    def _close_reaped_locked(self) -> None:
        for child in self._reaped:
            child.close()
        self._reaped.clear()

    def _wake_locked(self) -> None:
        if self._wake_w >= 0:
            # BlockingIOError: the pipe is full, so a wake-up is pending anyway.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    # The supervisor thread.

    def _supervise(self) -> None:
        """Wait for outcomes, deaths, deadlines and wake-ups; report outcomes (supervisor)."""
        while True:
            with self._lock:
                if self._closing and not self._children:
                    os.close(self._wake_r)
                    os.close(self._wake_w)
                    self._wake_r = self._wake_w = -1
                    return
                waitables: list[Connection | int] = [self._wake_r]
                if not self._watched:
                    waitables += [c.conn for c in self._children if not c.broken]
                waitables += [c.exit_fd for c in self._children]
                timeout = self._timeout_locked()
            ready: set[object] = set(wait(waitables, timeout))
            with self._lock:
                reports = self._handle_locked(ready)
            for done, outcome in reports:
                report_outcome(done, outcome)

    def _timeout_locked(self) -> float | None:
        deadlines = [self._respawn_at] if self._respawn_at is not None else []
        for child in self._children:
            if child.job is not None and child.killed_for is None:
                deadlines += [t for t in (child.soft_at, child.hard_at) if t is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _handle_locked(self, ready: set[object]) -> list[tuple[Done, Outcome]]:
        if self._wake_r in ready:  # wake-ups only interrupt the wait; read them away
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        reports: list[tuple[Done, Outcome]] = []
        for child in list(self._children):
            # Check first: the consumer's loop may have read it already (see watch).
            if child.conn in ready and not child.broken and _readable(child.conn):
                self._receive_locked(child, reports)
        for child in list(self._children):
            if child.exit_fd in ready:
                self._reap_locked(child, reports)
        now = time.monotonic()
        for child in self._children:
            if child.job is None or child.killed_for is not None:
                continue
            if child.hard_at is not None and child.hard_at <= now:
                child.killed_for = "time_limit"
                logger().warning("pool_time_limit", job_id=child.job.id, pid=child.pid)
                send_signal(child, signal.SIGKILL)
            elif child.soft_at is not None and child.soft_at <= now:
                child.soft_at = None  # sent once per job
                send_signal(child, signal.SIGUSR1)
        self._reconcile_locked()
        return [] if self._abandon else reports

    def _receive_locked(self, child: _Child, reports: list[tuple[Done, Outcome]]) -> None:
        try:
            data = child.conn.recv_bytes()
        except (EOFError, OSError):  # the child is gone, maybe mid-message
            child.broken = True
            return
        job, done = child.job, child.done
        if job is None or done is None:  # a child speaks only when spoken to
            return
        try:
            outcome: Outcome = pickle.loads(data)
        except Exception as exc:  # e.g. the result's class is unknown to the parent
            outcome = failure(job.id, exc, time.monotonic() - child.started)
        child.end()
        reports.append((done, outcome))
        if child.killed_for is not None:  # finished as the signal went out: let it go
            self._retire_locked(child)

    def _reap_locked(self, child: _Child, reports: list[tuple[Done, Outcome]]) -> None:
        # An outcome written just before exiting is still in the pipe.
        if child.job is not None and not child.broken and child.conn.poll():
            self._receive_locked(child, reports)
        child.process.join()
        exitcode = child.process.exitcode
        self._children.remove(child)
        self._reaped.append(child)
        if not self._watched:
            self._close_reaped_locked()
        if child.job is None or child.done is None:
            if not child.retiring and not self._closing:
                logger().warning("pool_child_exited", pid=child.pid, exit=describe(exitcode))
            return
        outcome = _lost(child, child.job, exitcode)
        if not self._abandon:
            logger().warning("pool_child_lost", job_id=child.job.id, why=outcome.exc_message)
        reports.append((child.done, outcome))


@dataclass(eq=False)
class _Child:
    """One child process as the parent sees it, and the job it runs."""

    process: ForkProcess
    pid: int
    conn: Connection
    exit_fd: int  # readable once the process has exited
    job: Job | None = None
    done: Done | None = None
    started: float = 0.0
    soft_at: float | None = None
    hard_at: float | None = None
    killed_for: KillReason | None = None
    retiring: bool = False  # told to exit, or being killed: takes no more jobs
    broken: bool = False  # its pipe failed: it is exiting, and its exit fd will say so

    @property
    def idle(self) -> bool:
        return self.job is None and not self.retiring and not self.broken

    def begin(self, job: Job, done: Done) -> None:
        """Record that `job` was sent to this child; its time limits count from now."""
        now = time.monotonic()
        self.job, self.done, self.started = job, done, now
        self.soft_at = None if job.soft_time_limit is None else now + job.soft_time_limit
        self.hard_at = None if job.time_limit is None else now + job.time_limit

    def end(self) -> None:
        """Forget the finished job."""
        self.job = self.done = self.soft_at = self.hard_at = None

    def close(self) -> None:
        """Release the parent's fds for this child, once it has been reaped."""
        self.conn.close()
        if self.exit_fd != self.process.sentinel:
            os.close(self.exit_fd)
        self.process.close()


def _readable(conn: Connection) -> bool:
    """Whether `conn` has data now (one system call; `Connection.poll` builds a selector)."""
    return bool(select.select([conn.fileno()], [], [], 0)[0])


def _lost(child: _Child, job: Job, exitcode: int | None) -> Outcome:
    """The outcome of a job whose process died: killed for its time limit, terminated or lost."""
    return died(
        job.id,
        job.name,
        pid=child.pid,
        killed_for=child.killed_for,
        time_limit=job.time_limit,
        runtime=time.monotonic() - child.started,
        how=describe(exitcode),
    )
