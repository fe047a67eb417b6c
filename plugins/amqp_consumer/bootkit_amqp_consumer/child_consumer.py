"""A prefork child that consumes for itself (``--prefork-intake children``): its own
broker connection, a `TaskConsumer` with a one-slot pool, and a pipe to the parent
(`Link`) for verdicts on redeliveries, control changes and reports. The parent's
side is `pool_children`.

The child runs each task in its loop's thread, kept by a `Keeper` (see keeper): a task
that runs long has the child hand back what it reserved to the other children and
keep its connection alive until it ends."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bootkit import logger
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.consumer import TaskConsumer
from bootkit_amqp_consumer.delivery import Delivery
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.keeper import Keeper
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pool_slot import Slot
from bootkit_amqp_consumer.pools import Runner, SoloPool
from bootkit_amqp_consumer.state import Runtimes, WorkerState

VERDICT_TIMEOUT = 5.0  # seconds a child waits for the parent's verdict; then it runs


class SlotPool(SoloPool):
    """A child's pool: runs each job in the child's loop thread, announced in its slot,
    with the soft time limit armed (the parent sends SIGUSR1 at its deadline)."""

    kind = "prefork"

    def __init__(self, runner: Runner, slot: Slot, link: Link, keeper: Keeper) -> None:
        super().__init__(runner, keeper)
        self.slot = slot
        self.link = link

    def execute(self, job: Job) -> Outcome:
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
        handler = signal.getsignal(signal.SIGUSR1)
        soft_limit = handler if isinstance(handler, SoftLimit) else SoftLimit()
        outcome = run(self.runner, job, soft_limit)
        self.slot.end(outcome)
        return outcome


class ChildConsumer(TaskConsumer):
    """A child's consumer: it asks the parent about a redelivery it does not know (the
    parent knows what every child ran or acknowledged, see pool_children), and names
    to the parent what it hands back before it does."""

    @property
    def link(self) -> Link:
        assert isinstance(self.pool, SlotPool)  # a child's pool: see _consume
        return self.pool.link

    def redelivered_unknown(self, delivery: Delivery) -> bool:
        request = delivery.request
        verdict = self.link.verdict(request.id, request.retries)
        if verdict == "done":
            self._already_done(delivery)
        elif verdict == "running":  # in another child: ask again later
            self.log.info("task_already_running", task=request.name, task_id=request.id)
            self._ask_again(delivery, 0.5)
        elif verdict == "wait":  # the parent asks the other children about it
            self._ask_again(delivery, 0.05)
        elif verdict == "reject":
            self.log.error("task_lost_too_often", task=request.name, task_id=request.id)
            self.state.rejected["lost"] += 1
            self.acks.reject(delivery.message, requeue=False)
        return verdict != "run"

    def _ask_again(self, delivery: Delivery, delay: float) -> None:
        def again() -> None:
            if not self._draining and not self.redelivered_unknown(delivery):
                self._accept(delivery)

        self.timer.call_later(delay, lambda: self.post(again))

    def handing_back(self, deliveries: list[Delivery]) -> None:
        self.link.send(("handed", [(d.request.id, d.request.retries) for d in deliveries]))


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
        """What the parent says of a redelivered task: run, done, running (in another
        child), wait (the parent asks the other children) or reject; run if it does not
        answer within VERDICT_TIMEOUT."""
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


@dataclass
class Spec:
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


def empty_report() -> dict[str, Any]:
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


def add_counts(into: dict[str, Any], report: dict[str, Any]) -> None:
    """Add the counts of `report` (a child's, see `_report`) to `into`."""
    for key in ("total", "rejected"):
        for name, count in report[key].items():
            into[key][name] = into[key].get(name, 0) + count
    into["revoked"] += report["revoked"]
    mine, theirs = into["runtimes"], report["runtimes"]
    mine["counts"] = [a + b for a, b in zip(mine["counts"], theirs["counts"], strict=True)]
    mine["total"] += theirs["total"]
    mine["count"] += theirs["count"]


def preload(config: WorkerConfig) -> None:
    """Do what a child does first, once, before forking it (in the parent), so that
    every module it needs is imported: a module another thread of the parent is in the
    middle of importing would hold its lock in the child for ever. Waits for such an
    import to end."""
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


def child_main(conn: Connection, spec: Spec, mask: set[signal.Signals]) -> None:
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
    keeper = Keeper()
    keeper.start()
    log = logger().bind(hostname=config.hostname, pid=os.getpid())
    backoff = 0.1
    link.go.wait()
    try:
        while not link.stopping.is_set():
            reported = set(state.done_unacked)
            try:
                _consume(link, spec, state, timer, keeper)
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


def _consume(link: Link, spec: Spec, state: WorkerState, timer: Any, keeper: Keeper) -> None:
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
        pool = SlotPool(spec.runner, spec.slot, link, keeper)
        consumer = ChildConsumer(
            app=spec.app,
            config=config,
            pool=pool,
            timer=timer,
            backend=spec.app.backend,
            state=state,
            connection=connection,
            events=events,
        )
        consumer.holds.rate_limits.share = spec.share[0]
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


def _handle(link: Link, state: WorkerState, spec: Spec, message: tuple[Any, ...]) -> None:
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
        _, seq, name, args = message
        if name == "seen":  # did this child acknowledge that try of that task?
            with state.lock:
                seen = tuple(args) in state.acked
            link.send(("reply", seq, seen))
            return
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

    subscription = consumer.subscription
    running, reserved = list(consumer.running.values()), list(consumer.reserved)
    held = list(consumer.holds.tasks.values())
    return {
        "pid": pid,
        "active": [d.info(hostname, pid) for d in running],
        "reserved": [d.info(hostname, pid) for d in reserved],
        "scheduled": [d.scheduled_info(hostname, pid) for d in held],
        "queues": [q.as_dict(recurse=True) for q in subscription.queues()] if subscription else [],
        "prefetch_count": consumer.qos.value if consumer.qos is not None else None,
        "total": dict(consumer.state.total),
        "rejected": dict(consumer.state.rejected),
        "revoked": consumer.state.processed["revoked"],
        "runtimes": dataclasses.asdict(consumer.state.runtimes),
    }


def _apply(link: Link, state: WorkerState, spec: Spec, name: str, args: tuple[Any, ...]) -> None:
    """A control change the parent made, made here too."""
    consumer, app = link.consumer, spec.app
    if name == "share":
        spec.share[0] = args[0]
        if consumer is not None:
            consumer.holds.rate_limits.share = args[0]
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
