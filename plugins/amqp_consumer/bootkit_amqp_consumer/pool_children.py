"""The prefork pool's second intake (``--prefork-intake children``): children that
consume for themselves.

Each child opens a broker connection of its own and runs a `TaskConsumer` with a
one-slot pool: it receives, acknowledges and runs its tasks with no hand-off through
the parent, so N children drain a queue as N solo workers would. The parent stays
the node: it answers remote control (merging what the children report), pushes
revocations and control changes down, enforces time limits, records the task of a
child that dies and replaces the child. Each child announces the task it runs in a
slot of shared memory (`Slot`), which the parent reads without waking the child.

A delivery the broker marks redelivered is checked with the parent before it runs
(`Children.verdict`): another child may run it now, its child may have died running
it (a worker-lost redelivery, counted against ``max_redeliveries``), or it may have
ended already. Against the parent's intake (the default) this trades:

- fairness: each child reserves its prefetch multiplier's worth of messages, so a
  long task holds the ones its child reserved while other children idle;
- connections: one broker connection per child (two with task events), and an AMQP
  broker is needed: elsewhere a dead child's reserved messages would wait for Redis's
  visibility timeout, or be lost with the embedded broker;
- what inspect sees: a child runs its task in its loop's thread, as a solo worker
  does, so it reads what the broker sent it only once the task ends; until then
  ``inspect reserved`` does not show it;
- rate limits are split evenly between the children.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import mmap
import multiprocessing
import os
import signal
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkProcess
from typing import Any

from bootkit import logger
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.errors import (
    TimeLimitExceededError,
    WorkerError,
    WorkerLostError,
)
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pool_process import _describe, _exit_fd, _signal
from bootkit_amqp_consumer.pools import Done, Reporting, Runner, SoloPool, report_outcome
from bootkit_amqp_consumer.state import Runtimes, WorkerState

CALL_TIMEOUT = 2.0  # seconds the parent waits for the children's replies to a call
VERDICT_TIMEOUT = 5.0  # seconds a child waits for the parent's verdict; then it runs
DONE_MAX = 10_000  # tasks ended by the parent (killed, terminated, orphaned), remembered
COUNTED = ("success", "failure", "retry")

# seq (odd while written), started, soft_at, hard_at (monotonic; 0: none), acks_late,
# ignore_result, retries, tasks ended by outcome (COUNTED), the task id and name.
_SLOT = struct.Struct("<Qddd??I3QH200sH200s")


@dataclass(frozen=True)
class Running:
    """A child's slot as the parent reads it: the task it runs (if any) and its counts."""

    task_id: str
    name: str
    started: float
    soft_at: float | None
    hard_at: float | None
    acks_late: bool
    ignore_result: bool
    retries: int
    ended: tuple[int, int, int]  # tasks ended SUCCESS, FAILURE, RETRY


class Slot:
    """One child's announcement of its running task, in shared memory (a seqlock:
    written by the child alone, read by the parent without a lock that a killed child
    could leave held)."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SLOT.size)
        self._seq = 0
        self._ended = [0, 0, 0]
        self._write("", "", 0.0, None, None, False, False, 0)

    def begin(self, job: Job, *, acks_late: bool, ignore_result: bool, retries: int) -> None:
        """The child starts `job` (in the child)."""
        now = time.monotonic()
        soft = None if job.soft_time_limit is None else now + job.soft_time_limit
        hard = None if job.time_limit is None else now + job.time_limit
        self._write(job.id, job.name, now, soft, hard, acks_late, ignore_result, retries)

    def end(self, outcome: Outcome) -> None:
        """The child's task ended with `outcome` (in the child)."""
        with contextlib.suppress(ValueError):
            self._ended[COUNTED.index(outcome.state.lower())] += 1
        self._write("", "", 0.0, None, None, False, False, 0)

    def read(self) -> Running:
        """What the child announced last (in the parent); task_id "" when it runs none."""
        for _ in range(10_000):  # a child killed mid-write leaves the seq odd for good
            before = _SLOT.unpack_from(self._map)
            if before[0] % 2 == 0 and _SLOT.unpack_from(self._map) == before:
                break
        _, started, soft, hard, late, ignore, retries, ok, failed, retried, n, tid, m, name = before
        return Running(
            task_id=tid[:n].decode("utf-8", "replace"),
            name=name[:m].decode("utf-8", "replace"),
            started=started,
            soft_at=soft or None,
            hard_at=hard or None,
            acks_late=late,
            ignore_result=ignore,
            retries=retries,
            ended=(ok, failed, retried),
        )

    def close(self) -> None:
        self._map.close()

    def _write(
        self,
        task_id: str,
        name: str,
        started: float,
        soft: float | None,
        hard: float | None,
        acks_late: bool,
        ignore_result: bool,
        retries: int,
    ) -> None:
        tid, tname = task_id.encode()[:200], name.encode()[:200]
        self._seq += 1  # odd: a reader retries
        struct.pack_into("<Q", self._map, 0, self._seq)
        self._seq += 1
        _SLOT.pack_into(
            self._map,
            0,
            self._seq - 1,
            started,
            soft or 0.0,
            hard or 0.0,
            acks_late,
            ignore_result,
            retries,
            *self._ended,
            len(tid),
            tid,
            len(tname),
            tname,
        )
        struct.pack_into("<Q", self._map, 0, self._seq)


class SlotPool(SoloPool):
    """A child's pool: runs each job in the child's loop thread, announced in its slot,
    with the soft time limit armed (the parent sends SIGUSR1 at its deadline)."""

    kind = "prefork"

    def __init__(self, runner: Runner, slot: Slot, link: Link) -> None:
        super().__init__(runner)
        self.slot = slot
        self.link = link
        self.consumer: Any = None  # the child's TaskConsumer, for the delivery's flags

    def submit(self, job: Job, done: Done) -> None:
        from bootkit_amqp_consumer.pool_child import SoftLimit, run

        delivery = self.consumer.running.get(job.id) if self.consumer is not None else None
        self.slot.begin(
            job,
            acks_late=bool(delivery and delivery.acks_late),
            ignore_result=bool(delivery and delivery.request.ignore_result),
            retries=int(job.context.get("retries") or 0),
        )
        if job.soft_time_limit is not None or job.time_limit is not None:
            self.link.send(("limits",))  # the parent's supervisor learns the deadline
        self._running = job.id
        handler = signal.getsignal(signal.SIGUSR1)
        soft_limit = handler if isinstance(handler, SoftLimit) else SoftLimit()
        try:
            outcome = run(self.runner, job, soft_limit)
        finally:
            self._running = None
        self.slot.end(outcome)
        report_outcome(done, outcome)


class Link:
    """A child's end of its pipe to the parent: one reader thread, and sends from any
    thread under a lock; the verdicts the child waits for."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._seq = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._replied = threading.Condition()
        self.go = threading.Event()
        self.stopping = threading.Event()
        self.consumer: Any = None
        self.handle: Callable[[tuple[Any, ...]], None] = lambda message: None

    def send(self, message: tuple[Any, ...]) -> None:
        # OSError: the parent is gone; the reader sees EOF and stops the child.
        with self._send_lock, contextlib.suppress(OSError):
            self.conn.send(message)

    def verdict(self, task_id: str, retries: int) -> str:
        """What the parent says of a redelivered task: run, done, running or reject."""
        seq = next(self._seq)
        box: list[Any] = []
        with self._replied:
            self._waiting[seq] = box
        self.send(("verdict?", seq, task_id, retries))
        with self._replied:
            answered = self._replied.wait_for(lambda: bool(box), VERDICT_TIMEOUT)
            self._waiting.pop(seq, None)
        if not answered:
            logger().warning("verdict_timed_out", task_id=task_id)
            return "run"
        return str(box[0])

    def read(self) -> None:
        """The reader thread: replies wake their waiter, the rest goes to `handle`."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the parent is gone: stop as if told to
                message = ("stop",)
                self.stopping.set()
                self.go.set()
                self.handle(message)
                return
            if message[0] == "verdict":
                with self._replied:
                    box = self._waiting.get(message[1])
                    if box is not None:
                        box.append(message[2])
                        self._replied.notify_all()
            elif message[0] == "go":
                self.go.set()
            else:
                try:
                    self.handle(message)
                except Exception:  # the reader must outlive any one message
                    logger().exception("child_message_failed", kind=message[0])


def _key(running: Running) -> tuple[str, float]:
    return running.task_id, running.started


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
        self._calls = itertools.count(1)
        self._replies: dict[int, list[Any]] = {}
        self._replied = threading.Condition(self._lock)
        # By (task id, retries): a retry is a new message with the same id.
        self._done: OrderedDict[tuple[str, int], None] = OrderedDict()  # redeliveries ack
        self._seen_running: dict[tuple[str, int], None] = {}  # a redelivery waits on these
        self._pushed: set[str] = set()  # revoked ids the children were sent
        self._shared = self._wanted  # the pool size the children's rate shares are for
        self._last_reports: dict[int, dict[str, Any]] = {}  # by pid, the latest gathered
        self._gone: dict[str, Any] = _empty_report()  # the counts of children gone
        self.log = logger().bind(hostname=config.hostname)

    @property
    def size(self) -> int:
        return self._wanted

    # -- the pool's interface ---------------------------------------------------------

    def start(self) -> None:
        _preload(self.config)
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
                    _signal(child, signal.SIGKILL)
            thread = self._thread
            self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def terminate(self, job_id: str, signum: int = signal.SIGTERM) -> bool:
        with self._lock:
            for child in self._children:
                running = child.slot.read()
                if running.task_id == job_id:
                    if child.killed != _key(running):
                        child.killed_for, child.killed = "terminated", _key(running)
                        _signal(child, signal.Signals(signum))
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
            seq = next(self._calls)
            box: list[Any] = []
            self._replies[seq] = box
            asked = [c for c in self._children if _send(c, ("call", seq, name, args))]
            self._replied.wait_for(lambda: len(box) >= len(asked), timeout)
            self._replies.pop(seq, None)
            return list(box)

    def verdict(self, task_id: str, retries: int, asking: _Child | None = None) -> str:
        """What a child is to do with a redelivery of `task_id` (see the module)."""
        with self._lock:
            key = (task_id, retries)
            for child in list(self._children):
                running = child.slot.read()
                if child is asking or (running.task_id, running.retries) != key:
                    continue
                if _exited(child):  # its connection died with it: reap it first
                    self._reap_locked(child)
                else:
                    self._seen_running[key] = None
                    return "running"
            if key in self._done or (task_id, -1) in self._done:
                return "done"
            if self._seen_running.pop(key, 0) is None:
                # It ran elsewhere while this redelivery waited, and has ended: whatever
                # became of that run's ack (its connection is why the broker redelivered).
                return "done"
            lost = self.state.lost.get(task_id, 0)
            return "reject" if lost > self.config.max_redeliveries else "run"

    # -- the parent's side ------------------------------------------------------------

    def _spawn_locked(self) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        slot = Slot()
        with self.state.lock:  # copied here: a lock held across fork stays held there
            revoked = OrderedDict(self.state.revoked)
        self._pushed.update(revoked)
        spec = _Spec(
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
            target=_child_main, args=(child_end, spec, mask), name="bootkit-prefork", daemon=True
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
        self._children.append(_Child(process, process.pid, parent_end, _exit_fd(process), slot))

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
            for child in list(self._children):
                if child.conn in ready:
                    self._receive_locked(child)
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
            if running.task_id and child.killed != _key(running):
                if running.soft_at is not None and child.soft_sent != _key(running):
                    deadlines.append(running.soft_at)
                if running.hard_at is not None:
                    deadlines.append(running.hard_at)
        return max(0.0, min(deadlines) - time.monotonic())

    def _enforce_limits_locked(self) -> None:
        now = time.monotonic()
        for child in self._children:
            running = child.slot.read()
            if not running.task_id or child.killed == _key(running):
                continue
            if running.hard_at is not None and running.hard_at <= now:
                child.killed_for, child.killed = "time_limit", _key(running)
                self.log.warning("pool_time_limit", job_id=running.task_id, pid=child.pid)
                _signal(child, signal.SIGKILL)
            elif (
                running.soft_at is not None
                and running.soft_at <= now
                and child.soft_sent != _key(running)
            ):
                child.soft_sent = _key(running)
                _signal(child, signal.SIGUSR1)

    def _count_locked(self, child: _Child | None = None) -> None:
        """Add what the children ended since last time to the parent's counts."""
        for each in [child] if child is not None else self._children:
            ended = each.slot.read().ended
            with self.state.lock:
                for name, now, before in zip(COUNTED, ended, each.ended, strict=True):
                    if now > before:
                        self.state.processed[name] += now - before
            each.ended = ended

    def _receive_locked(self, child: _Child) -> None:
        try:
            while child.conn.poll():
                message = child.conn.recv()
                kind = message[0]
                if kind == "verdict?":
                    _, seq, task_id, retries = message
                    _send(child, ("verdict", seq, self.verdict(task_id, retries, child)))
                elif kind == "reply":
                    box = self._replies.get(message[1])
                    if box is not None:
                        box.append(message[2])
                        self._replied.notify_all()
                elif kind == "orphans":
                    for task_id, retries in message[1]:
                        self._remember_done(task_id, retries)
                # "limits": a timed task started; the wait's new timeout covers it
        except (EOFError, OSError):
            pass  # it is exiting: its exit fd says so

    def _remember_done(self, task_id: str, retries: int) -> None:
        self._done[task_id, retries] = None
        self._done.move_to_end((task_id, retries))
        while len(self._done) > DONE_MAX:
            self._done.popitem(last=False)

    def _reap_locked(self, child: _Child) -> None:
        with contextlib.suppress(EOFError, OSError):
            if child.conn.poll():
                self._receive_locked(child)
        running = child.slot.read()
        child.process.join()
        exitcode = child.process.exitcode
        self._count_locked(child)
        self._children.remove(child)
        if (last := self._last_reports.pop(child.pid, None)) is not None:
            _add_counts(self._gone, last)
        child.conn.close()
        if child.exit_fd != child.process.sentinel:
            os.close(child.exit_fd)
        child.process.close()
        child.slot.close()
        if running.task_id:
            self._seen_running.pop((running.task_id, running.retries), None)  # not to the end
            self._lost(child, running, _describe(exitcode))
        elif not child.retiring and not self._closing:
            self.log.warning("pool_child_exited", pid=child.pid, exit=_describe(exitcode))

    def _lost(self, child: _Child, running: Running, how: str) -> None:
        """The task of a child that died: its outcome, as the consumer would record it."""
        task = f"task {running.name}[{running.task_id}]"
        runtime = time.monotonic() - running.started
        # A signal meant for a task that ended as it went out hit the next one: lost.
        killed_for = child.killed_for if child.killed == _key(running) else None
        consumer = self.state.consumer
        events = consumer.events if consumer is not None else None
        backend = None if running.ignore_result else self.app.backend
        if killed_for == "terminated" and self.state.is_revoked(running.task_id):
            self._remember_done(running.task_id, running.retries)
            self.state.processed["revoked"] += 1
            self.log.info("task_terminated", task=running.name, task_id=running.task_id)
            if events is not None and events.task_events:
                events.send(
                    "task-revoked",
                    uuid=running.task_id,
                    terminated=True,
                    signum=None,
                    expired=False,
                )
            if backend is not None:
                try:
                    backend.store_state(running.task_id, "REVOKED", reason="terminated")
                except Exception:
                    self.log.exception("result_store_failed", task_id=running.task_id)
            return
        if killed_for == "time_limit":
            exc_type, lost = TimeLimitExceededError.__name__, False
            message = f"{task} ran past its time limit and was killed ({how})"
        elif killed_for == "terminated":
            exc_type, lost = "Terminated", True
            message = f"{task} was terminated ({how})"
        else:
            exc_type, lost = WorkerLostError.__name__, True
            message = f"process {child.pid} running {task} exited prematurely ({how})"
        outcome = Outcome(
            running.task_id,
            "FAILURE",
            runtime=runtime,
            exc_type=exc_type,
            exc_module=WorkerLostError.__module__,
            exc_message=message,
            lost=lost,
        )
        self.log.warning("pool_child_lost", job_id=running.task_id, why=message)
        store = True
        if lost:
            with self.state.lock:
                self.state.lost[running.task_id] += 1
                times = self.state.lost[running.task_id]
            give_up = times > self.config.max_redeliveries
            requeued = running.acks_late and not give_up
            self.log.error(
                "task_lost",
                task=running.name,
                task_id=running.task_id,
                error=message,
                times=times,
                requeued=requeued,
            )
            store = not requeued  # a requeued task's outcome is its next run's
        else:
            self._remember_done(running.task_id, running.retries)  # its redelivery: acked
        self.state.processed["failure"] += 1
        if store and events is not None and events.task_events:
            events.task_ended(running.task_id, outcome)
        if store and backend is not None:
            try:
                backend.store_outcome(outcome)
            except Exception:
                self.log.exception("result_store_failed", task_id=running.task_id)


@dataclass
class _Spec:
    """What a child is forked with (nothing is pickled: the child has the parent's memory)."""

    app: App
    config: WorkerConfig
    runner: Runner
    slot: Slot
    revoked: OrderedDict[str, float]
    rate_limits: dict[str, float | None]
    added_queues: dict[str, tuple[str, str, str]]
    cancelled_queues: set[str]
    task_events: bool
    go: bool
    parents: list[Any]
    share: list[float]  # this child's part of each rate limit (one item: kept across reconnects)


def _empty_report() -> dict[str, Any]:
    runtimes = Runtimes()
    return {
        "pid": 0,
        "active": [],
        "reserved": [],
        "scheduled": [],
        "queues": [],
        "prefetch_count": 0,
        "total": {},
        "rejected": {},
        "revoked": 0,
        "runtimes": dataclasses.asdict(runtimes),
    }


def _add_counts(into: dict[str, Any], report: dict[str, Any]) -> None:
    """Add the counts of `report` (a child's, see `_report`) to `into`."""
    for key in ("total", "rejected"):
        for name, count in report[key].items():
            into[key][name] = into[key].get(name, 0) + count
    into["revoked"] += report["revoked"]
    mine, theirs = into["runtimes"], report["runtimes"]
    mine["counts"] = [a + b for a, b in zip(mine["counts"], theirs["counts"], strict=True)]
    mine["total"] += theirs["total"]
    mine["count"] += theirs["count"]


def _send(child: _Child, message: tuple[Any, ...]) -> bool:
    try:
        child.conn.send(message)
    except OSError:
        return False
    return True


def _exited(child: _Child) -> bool:
    return bool(multiprocessing.connection.wait([child.exit_fd], 0))


# -- the child's side ------------------------------------------------------------------


def _preload(config: WorkerConfig) -> None:
    """Do what a child does first, once, before forking it (in the parent), so that
    every module it needs is imported: a module another thread of the parent is in the
    middle of importing would hold its lock in the child for ever. Waits for such an
    import to end."""
    import bootkit_amqp_consumer.consumer
    import bootkit_amqp_consumer.pool_child
    import bootkit_amqp_consumer.timer  # noqa: F401
    from bootkit_amqp_consumer.backends import open_backend
    from bootkit_amqp_consumer.clock import LamportClock
    from bootkit_amqp_consumer.events import EventDispatcher
    from bootkit_amqp_consumer.transport import WorkerConnection

    connection = WorkerConnection(config.broker, transport_options=config.transport_options)
    assert connection.transport is not None  # made, not connected
    EventDispatcher(connection.clone(), hostname=config.hostname, clock=LamportClock()).close()
    if config.result_backend:
        open_backend(config.result_backend).close()  # a client made, nothing connected


def _free_locks(app: App) -> None:
    """Release the locks a thread of the parent held as it forked (in the child, where
    that thread does not exist): the app's, and structlog's per-file write locks."""
    from structlog import _output

    app._lock = threading.Lock()  # a fresh one: the app is this child's now
    for lock in list(_output.WRITE_LOCKS.values()):
        if lock.locked():
            lock.release()


def _child_main(conn: Connection, spec: _Spec, mask: set[signal.Signals]) -> None:
    """Consume, run and acknowledge tasks on a connection of the child's own until told
    to stop or the parent goes away (in the child)."""
    from bootkit_amqp_consumer.errors import BrokerConnectionLostError
    from bootkit_amqp_consumer.pool_child import become_child
    from bootkit_amqp_consumer.timer import Timer

    become_child(spec.parents, mask)
    _free_locks(spec.app)
    config, app = spec.config, spec.app
    app.configure(
        broker=config.broker,
        result_backend=config.result_backend,
        transport_options=config.transport_options,
    )  # a backend of the child's own, opened on first use
    state = WorkerState(task_events=spec.task_events)
    state.revoked.update(spec.revoked)
    state.rate_limits.update(spec.rate_limits)
    state.added_queues.update(spec.added_queues)
    state.cancelled_queues.update(spec.cancelled_queues)
    link = Link(conn)
    if spec.go:
        link.go.set()
    link.handle = lambda message: _handle(link, state, spec, message)
    threading.Thread(target=link.read, name="bootkit-prefork-link", daemon=True).start()
    timer = Timer()
    timer.start()
    log = logger().bind(hostname=config.hostname, pid=os.getpid())
    backoff = 0.1
    link.go.wait()
    try:
        while not link.stopping.is_set():
            reported = set(state.done_unacked)
            try:
                _consume(link, spec, state, timer)
                return  # stopped and drained
            except BrokerConnectionLostError as exc:
                orphans = [t for t in state.done_unacked if t not in reported]
                if orphans:  # which try of each it was is not kept: -1, any
                    link.send(("orphans", [(task_id, -1) for task_id in orphans]))
                log.warning("child_connection_lost", error=str(exc), retry_in=backoff)
            if link.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 5.0)
    finally:
        timer.stop()
        with contextlib.suppress(Exception):
            app.close()


def _consume(link: Link, spec: _Spec, state: WorkerState, timer: Any) -> None:
    from bootkit_amqp_consumer.consumer import TaskConsumer
    from bootkit_amqp_consumer.errors import BrokerConnectionLostError
    from bootkit_amqp_consumer.events import EventDispatcher
    from bootkit_amqp_consumer.transport import WorkerConnection

    config = spec.config
    connection = WorkerConnection(
        config.broker,
        heartbeat=config.broker_heartbeat or None,
        transport_options=config.transport_options,
        connect_timeout=4,
    )
    events = None
    try:
        try:
            connection.connect()
        except Exception as exc:
            raise BrokerConnectionLostError(f"{type(exc).__name__}: {exc}") from exc
        events = EventDispatcher(
            connection.clone(),
            hostname=config.hostname,
            clock=state.clock,
            task_events=state.task_events,
            schedule=timer.call_later,
        )
        pool = SlotPool(spec.runner, spec.slot, link)
        consumer = TaskConsumer(
            app=spec.app,
            config=config,
            pool=pool,
            timer=timer,
            backend=spec.app.backend,
            state=state,
            connection=connection,
            events=events,
        )
        pool.consumer = consumer
        consumer.verdict = link.verdict
        consumer.rate_share = spec.share[0]
        errors = (*connection.connection_errors, *connection.channel_errors, OSError)
        try:
            consumer.declare()
        except errors as exc:
            raise BrokerConnectionLostError(f"{type(exc).__name__}: {exc}") from exc
        state.consumer = link.consumer = consumer
        if link.stopping.is_set():
            consumer.stop()
        try:
            consumer.run()
        finally:
            state.consumer = link.consumer = None
            consumer.close()
    finally:
        if events is not None:
            events.close()
        with contextlib.suppress(Exception):
            connection.release()


def _handle(link: Link, state: WorkerState, spec: _Spec, message: tuple[Any, ...]) -> None:
    """A message from the parent (in the child's reader thread)."""
    kind = message[0]
    if kind == "stop":
        link.stopping.set()  # first: a consumer set up from now on sees it and stops
        link.go.set()
        if (consumer := link.consumer) is not None:
            consumer.stop()
        return
    consumer = link.consumer
    if kind == "call":  # answered here: the loop thread may be running a task
        _, seq, name, _args = message
        link.send(("reply", seq, _report(consumer) if consumer is not None else None))
    elif kind == "apply":
        _, name, args = message
        uses_connection = name in ("add_queue", "cancel_queue")
        if (
            not uses_connection
            or consumer is None
            or not consumer.post(lambda: _apply(link, state, spec, name, args))
        ):
            _apply(link, state, spec, name, args)


def _report(consumer: Any) -> dict[str, Any]:
    """What the parent's inspect replies are made of (in the child's reader thread:
    each copy of the loop's collections is one call under the GIL)."""
    hostname, pid = consumer.config.hostname, os.getpid()

    def scheduled(delivery: Any) -> dict[str, Any]:
        return {
            "eta": delivery.eta.isoformat() if delivery.eta else None,
            "priority": (delivery.message.properties or {}).get("priority"),
            "request": delivery.info(hostname, pid),
        }

    subscription = consumer.subscription
    running, reserved = list(consumer.running.values()), list(consumer.reserved)
    held = list(consumer.scheduled.values())
    return {
        "pid": pid,
        "active": [d.info(hostname, pid) for d in running],
        "reserved": [d.info(hostname, pid) for d in reserved],
        "scheduled": [scheduled(d) for d in held],
        "queues": [q.as_dict(recurse=True) for q in subscription.queues()] if subscription else [],
        "prefetch_count": consumer.qos.value if consumer.qos is not None else None,
        "total": dict(consumer.state.total),
        "rejected": dict(consumer.state.rejected),
        "revoked": consumer.state.processed["revoked"],
        "runtimes": dataclasses.asdict(consumer.state.runtimes),
    }


def _apply(link: Link, state: WorkerState, spec: _Spec, name: str, args: tuple[Any, ...]) -> None:
    """A control change the parent made, made here too."""
    consumer, app = link.consumer, spec.app
    if name == "share":
        spec.share[0] = args[0]
        if consumer is not None:
            consumer.rate_share = args[0]
    elif name == "revoke":
        for task_id in args[0]:
            state.revoke(task_id)
    elif name == "rate_limit":
        state.rate_limits[args[0]] = args[1]
    elif name == "time_limit":
        task = app.tasks.get(args[0])
        if task is not None:
            task.soft_time_limit, task.time_limit = args[1], args[2]
    elif name == "task_events":
        state.task_events = args[0]
        if consumer is not None and consumer.events is not None:
            consumer.events.task_events = args[0]
    elif name == "add_queue":
        if consumer is not None and consumer.subscription is not None:
            consumer.subscription.add_queue(*args)  # and remembers it in the state
        else:
            state.added_queues[args[0]] = (args[1], args[2], args[3])
            state.cancelled_queues.discard(args[0])
    elif name == "cancel_queue":
        if consumer is not None and consumer.subscription is not None:
            consumer.subscription.cancel_queue(args[0])
        state.cancelled_queues.add(args[0])
        state.added_queues.pop(args[0], None)
