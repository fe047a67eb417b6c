"""The prefork pool's intake on AMQP brokers (``--prefork-intake children``, what
``auto`` picks there): children that consume for themselves.

Each child opens a broker connection of its own and runs a `TaskConsumer` with a
one-slot pool: it receives, acknowledges and runs its tasks with no hand-off through
the parent, so N children drain a queue as N solo workers would. The parent stays
the node: it answers remote control (merging what the children report), pushes
revocations and control changes down, enforces time limits, records the task of a
child that dies and replaces the child. Each child announces the task it runs in a
slot of shared memory (`Slot`), which the parent reads without waking the child.

A delivery the broker marks redelivered is checked with the parent before it runs
(`Children.verdict`): another child may run it now, its child may have died running
it (counted against ``max_redeliveries``), or it may have ended already; of one the
parent knows nothing, the other children are asked (see pool_redeliveries). What
this trades against the parent's intake (connections, what inspect sees, rate limits
split between the children) is in the README, "Throughput".
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkProcess
from typing import Any

from bootkit import logger
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.child_consumer import Spec, add_counts, child_main, empty_report, preload
from bootkit_amqp_consumer.errors import WorkerError
from bootkit_amqp_consumer.forked import describe, died, exit_fd, send_signal
from bootkit_amqp_consumer.job import Job
from bootkit_amqp_consumer.losses import Losses
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pool_calls import Call, Calls
from bootkit_amqp_consumer.pool_redeliveries import CALL_TIMEOUT, Redeliveries
from bootkit_amqp_consumer.pool_slot import COUNTED, Running, Slot, task_key
from bootkit_amqp_consumer.pools import Done, Reporting, Runner
from bootkit_amqp_consumer.state import WorkerState


@dataclass(eq=False)
class _Child:
    process: ForkProcess
    pid: int
    conn: Connection
    exit_fd: int
    slot: Slot
    killed_for: str | None = None  # "time_limit" or "terminated", once signalled...
    killed: tuple[str, float] = ("", 0.0)  # ...for this task (id, start): it may end first
    soft_sent: tuple[str, float] = ("", 0.0)  # the task a SIGUSR1 went out for
    retiring: bool = False
    ended: tuple[int, int, int] = (0, 0, 0)  # the slot's counts the parent has taken


class Children(Reporting):
    """N child processes, each consuming on a connection of its own (see the module)."""

    kind = "prefork"
    consumes = True

    def __init__(
        self, *, app: App, config: WorkerConfig, runner: Runner, state: WorkerState
    ) -> None:
        self.app, self.config, self.runner, self.state = app, config, runner, state
        self._wanted = config.concurrency
        self._ctx = multiprocessing.get_context("fork")
        self._lock = threading.RLock()
        self._children: list[_Child] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closing = False
        self._respawn_at: float | None = None  # a fork failed: try again then
        self._going = False  # told the children to consume
        self._calls = Calls(self._lock)
        self._redeliveries = Redeliveries(self._calls.end)
        self._pushed: set[str] = set()  # revoked ids the children were sent
        self._shared = self._wanted  # the pool size the children's rate shares are for
        self._last_reports: dict[int, dict[str, Any]] = {}  # by pid, the latest gathered
        self._gone: dict[str, Any] = empty_report()  # the counts of children gone
        self.log = logger().bind(hostname=config.hostname)

    @property
    def size(self) -> int:
        return self._wanted

    # -- the pool's interface ---------------------------------------------------------

    def start(self) -> None:
        preload(self.config)
        with self._lock:
            if self._thread is not None:
                raise WorkerError("the prefork pool was already started; create a new one")
            for _ in range(self._wanted):
                self._spawn_locked()
            self.state.on_change.append(self._push_revoked)
            self._thread = threading.Thread(
                target=self._supervise, name="bootkit-prefork-supervisor", daemon=True
            )
            self._thread.start()

    def begin(self) -> None:
        """Let the children consume (the consumer blueprint is up)."""
        with self._lock:
            self._going = True
            for child in self._children:
                _send(child, ("go",))

    def drain(self) -> None:
        """Warm shutdown begins: the children take no more tasks, finish theirs, exit."""
        with self._lock:
            self._closing = True
            for child in self._children:
                _send(child, ("stop",))

    def submit(self, job: Job, done: Done) -> None:
        raise WorkerError("the children consume for themselves: nothing is submitted to them")

    def stop(self, *, wait: bool = True) -> None:
        with self._lock:
            self._closing = True
            with contextlib.suppress(ValueError):
                self.state.on_change.remove(self._push_revoked)
            for child in self._children:
                if wait:
                    _send(child, ("stop",))
                else:
                    send_signal(child, signal.SIGKILL)
            thread = self._thread
            self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def terminate(self, job_id: str, signum: int = signal.SIGTERM) -> bool:
        with self._lock:
            for child in self._children:
                running = child.slot.read()
                if running.task_id == job_id:
                    if child.killed != task_key(running):
                        child.killed_for, child.killed = "terminated", task_key(running)
                        send_signal(child, signal.Signals(signum))
                    return True
        return False

    def grow(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"grow() takes a positive count, got {n}")
        with self._lock:
            self._wanted += n
            self._reconcile_locked()
            self._wake()

    def shrink(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"shrink() takes a positive count, got {n}")
        with self._lock:
            self._wanted -= min(n, self._wanted - 1)
            self._reconcile_locked()

    def active(self) -> list[str]:
        with self._lock:
            return [r for c in self._children if (r := c.slot.read().task_id)]

    def pids(self) -> list[int]:
        with self._lock:
            return [child.pid for child in self._children]

    # -- what the parent's commands use ----------------------------------------------

    def gather(self, timeout: float = CALL_TIMEOUT) -> list[dict[str, Any]]:
        """Each consuming child's report (`_report`): running, reserved, scheduled,
        queues, counts; children that do not answer in time are left out. One more
        report holds the counts of children that have exited, as last reported, so
        that the worker's counts never go down when a child goes."""
        reports = [r for r in self.call("report", timeout=timeout) if isinstance(r, dict)]
        with self._lock:
            for report in reports:
                self._last_reports[report["pid"]] = report
            return [*reports, self._gone]

    def broadcast(self, name: str, *args: Any) -> None:
        """Have every child apply a control change (see `_apply`); no reply."""
        with self._lock:
            for child in self._children:
                _send(child, ("apply", name, args))

    def call(self, name: str, *args: Any, timeout: float = CALL_TIMEOUT) -> list[Any]:
        with self._lock:
            call = self._calls.start([c.conn for c in self._children], name, *args)
            return self._calls.wait(call, timeout)

    def verdict(self, task_id: str, retries: int, asking: _Child | None = None) -> str:
        """What a child is to do with a redelivery of `task_id` (see the module): run,
        done, running (elsewhere), wait (ask again soon) or reject."""
        with self._lock:
            key = (task_id, retries)
            for child in list(self._children):
                running = child.slot.read()
                if child is asking or (running.task_id, running.retries) != key:
                    continue
                if wait([child.exit_fd], 0):  # its connection died with it: reap it first
                    self._reap_locked(child)
                else:
                    self._redeliveries.running(key)
                    return "running"
            given_up = self.state.lost.get(task_id, 0) > self.config.max_redeliveries
            return self._redeliveries.verdict(
                key, given_up=given_up, ask=lambda: self._ask_seen_locked(key, asking)
            )

    def _ask_seen_locked(self, key: tuple[str, int], asking: _Child | None) -> Call:
        """Ask every child but `asking` whether it acknowledged `key` (see `verdict`)."""
        others = [c.conn for c in self._children if c is not asking]
        return self._calls.start(others, "seen", *key)

    # -- the parent's side ------------------------------------------------------------

    def _spawn_locked(self) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        slot = Slot()
        with self.state.lock:  # copied here: a lock held across fork stays held there
            revoked = OrderedDict(self.state.revoked)
        self._pushed.update(revoked)
        spec = Spec(
            app=self.app,
            config=dataclasses.replace(self.config, concurrency=1, pool="solo"),
            runner=self.runner,
            slot=slot,
            revoked=revoked,
            rate_limits=dict(self.state.rate_limits),
            added_queues=dict(self.state.added_queues),
            cancelled_queues=set(self.state.cancelled_queues),
            task_events=self.state.task_events,
            go=self._going,
            share=[1.0 / self._wanted],
            parents=[parent_end, self._wake_r, self._wake_w]
            + [x for c in self._children for x in (c.conn, c.exit_fd)],
        )
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        process = self._ctx.Process(
            target=child_main, args=(child_end, spec, mask), name="bootkit-prefork", daemon=True
        )
        try:
            process.start()
        except BaseException:
            parent_end.close()
            slot.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child_end.close()
        assert process.pid is not None
        self._children.append(_Child(process, process.pid, parent_end, exit_fd(process), slot))

    def _reconcile_locked(self) -> None:
        if self._shared != self._wanted:  # each child keeps 1/N of every rate limit
            self._shared = self._wanted
            self.broadcast("share", 1.0 / self._wanted)
        serving = [c for c in self._children if not c.retiring]
        for child in reversed(serving[self._wanted :]):
            child.retiring = True
            _send(child, ("stop",))
        if not self._closing and (self._respawn_at is None or self._respawn_at <= time.monotonic()):
            self._respawn_at = None
            try:
                while sum(not c.retiring for c in self._children) < self._wanted:
                    self._spawn_locked()
            except OSError as exc:  # EAGAIN/ENOMEM from fork: keep going, try again soon
                self.log.error("pool_spawn_failed", error=str(exc), retry_in=1.0)
                self._respawn_at = time.monotonic() + 1.0

    def _wake(self) -> None:
        if self._wake_w >= 0:  # else the supervisor is gone: nothing to wake
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _push_revoked(self) -> None:
        # The state's lock is let go before the pool's is taken (the supervisor takes
        # them the other way round).
        with self.state.lock:
            revoked = list(self.state.revoked)
        with self._lock:
            new = [task_id for task_id in revoked if task_id not in self._pushed]
            self._pushed.update(new)
            if new:
                self.broadcast("revoke", new)

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._closing and not self._children:
                    os.close(self._wake_r)
                    os.close(self._wake_w)
                    self._wake_r = self._wake_w = -1
                    return
                waitables: list[Any] = [self._wake_r]
                waitables += [c.conn for c in self._children]
                waitables += [c.exit_fd for c in self._children]
                timeout = self._timeout_locked()
            ready = set(wait(waitables, timeout))
            try:
                self._turn(ready)
            except Exception:  # the supervisor must outlive any one failure
                self.log.exception("pool_supervisor_error")
                time.sleep(0.1)  # not a spin, should it recur

    def _turn(self, ready: set[Any]) -> None:
        """One wake-up of the supervisor: messages, deaths, limits, counts, respawns."""
        with self._lock:
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            # Every message first, then the notices and replies before the verdicts: a
            # child says it handed tasks back or lost acks before the broker can
            # redeliver them, so whatever led to a verdict asked for now is in a pipe
            # by then; once one is, every pipe is read once more.
            messages = [
                (child, message)
                for child in list(self._children)
                if child.conn in ready
                for message in _read(child)
            ]
            if any(message[0] == "verdict?" for _, message in messages):
                messages += [
                    (child, message) for child in list(self._children) for message in _read(child)
                ]
            messages.sort(key=lambda item: ORDER.get(item[1][0], 2))
            for child, message in messages:
                try:
                    self._handle_locked(child, message)
                except Exception:  # the others are still handled
                    self.log.exception("pool_message_failed", kind=message[0])
            for child in list(self._children):
                if child.exit_fd in ready and child in self._children:
                    self._reap_locked(child)
            self._enforce_limits_locked()
            self._count_locked()
            self._reconcile_locked()

    def _timeout_locked(self) -> float:
        deadlines = [time.monotonic() + 1.0]  # the children's counts, once a second
        for child in self._children:
            running = child.slot.read()
            if running.task_id and child.killed != task_key(running):
                if running.soft_at is not None and child.soft_sent != task_key(running):
                    deadlines.append(running.soft_at)
                if running.hard_at is not None:
                    deadlines.append(running.hard_at)
        return max(0.0, min(deadlines) - time.monotonic())

    def _enforce_limits_locked(self) -> None:
        now = time.monotonic()
        for child in self._children:
            running = child.slot.read()
            if not running.task_id or child.killed == task_key(running):
                continue
            if running.hard_at is not None and running.hard_at <= now:
                child.killed_for, child.killed = "time_limit", task_key(running)
                self.log.warning("pool_time_limit", job_id=running.task_id, pid=child.pid)
                send_signal(child, signal.SIGKILL)
            elif (
                running.soft_at is not None
                and running.soft_at <= now
                and child.soft_sent != task_key(running)
            ):
                child.soft_sent = task_key(running)
                send_signal(child, signal.SIGUSR1)

    def _count_locked(self, child: _Child | None = None) -> None:
        """Add what the children ended since last time to the parent's counts."""
        for each in [child] if child is not None else self._children:
            ended = each.slot.read().ended
            with self.state.lock:
                for name, now, before in zip(COUNTED, ended, each.ended, strict=True):
                    if now > before:
                        self.state.processed[name] += now - before
            each.ended = ended

    def _handle_locked(self, child: _Child, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "verdict?":
            _, seq, task_id, retries = message
            _send(child, ("verdict", seq, self.verdict(task_id, retries, child)))
        elif kind == "reply":
            self._calls.reply(message[1], message[2])
        elif kind == "orphans":
            for task_id, retries in message[1]:
                self._redeliveries.ended(task_id, retries)
        elif kind == "handed":
            self._redeliveries.handed(message[1])  # (id, retries) tuples, as sent
        # "limits": a timed task started; the wait's new timeout covers it

    def _reap_locked(self, child: _Child) -> None:
        for message in _read(child):
            self._handle_locked(child, message)
        running = child.slot.read()
        child.process.join()
        exitcode = child.process.exitcode
        self._count_locked(child)
        self._children.remove(child)
        if (last := self._last_reports.pop(child.pid, None)) is not None:
            add_counts(self._gone, last)
        child.conn.close()
        if child.exit_fd != child.process.sentinel:
            os.close(child.exit_fd)
        child.process.close()
        child.slot.close()
        if running.task_id:
            self._redeliveries.died((running.task_id, running.retries))
            self._lost(child, running, describe(exitcode))
        elif not child.retiring and not self._closing:
            self.log.warning("pool_child_exited", pid=child.pid, exit=describe(exitcode))

    def _lost(self, child: _Child, running: Running, how: str) -> None:
        """The task of a child that died: its outcome, as the consumer would record it."""
        # A signal meant for a task that ended as it went out hit the next one: lost.
        killed_for = child.killed_for if child.killed == task_key(running) else None
        consumer = self.state.consumer
        events = consumer.events if consumer is not None else None
        record = Losses(self.state, events, self.log)
        backend = None if running.ignore_result else self.app.backend
        if killed_for == "terminated" and self.state.is_revoked(running.task_id):
            self._redeliveries.ended(running.task_id, running.retries)
            record.revoked(running.task_id, running.name, backend, "terminated")
            return
        limit = None if running.hard_at is None else running.hard_at - running.started
        outcome = died(
            running.task_id,
            running.name,
            pid=child.pid,
            killed_for=killed_for,
            time_limit=limit,
            runtime=time.monotonic() - running.started,
            how=how,
        )
        self.log.warning("pool_child_lost", job_id=running.task_id, why=outcome.exc_message)
        if outcome.lost:
            record.lost(
                outcome,
                running.name,
                backend,
                acks_late=running.acks_late,
                max_redeliveries=self.config.max_redeliveries,
            )
        else:  # killed for its time limit: a failure, its redelivery acked
            self._redeliveries.ended(running.task_id, running.retries)
            self.state.processed["failure"] += 1
            record.failed(outcome, backend)


# The order a wake-up's messages are handled in: what a child tells of its
# deliveries, then replies, then the rest, verdicts last.
ORDER = {"handed": 0, "orphans": 0, "reply": 1, "verdict?": 3}


def _read(child: _Child) -> list[tuple[Any, ...]]:
    """Every message `child` has sent so far (none once it is exiting)."""
    messages = []
    with contextlib.suppress(EOFError, OSError):  # it is exiting: its exit fd says so
        while child.conn.poll():
            messages.append(child.conn.recv())
    return messages


def _send(child: _Child, message: tuple[Any, ...]) -> bool:
    try:
        child.conn.send(message)
    except OSError:
        return False
    return True
