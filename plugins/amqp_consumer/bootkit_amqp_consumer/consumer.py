"""The task consumer: receives task messages and hands them to the pool.

The consumer's state and its broker connection are used by one thread at a time:
the one holding the loop's turn. That is the loop's own thread, except while it
waits: then a pool thread that has finished a task takes the turn to settle the task
and hand out the next one itself, so a busy pool keeps going with no wake-up of the
loop and back. Other threads (the timer, and a pool thread that finds the loop at
work) `post` a callback to its `Inbox`, which the loop runs between two waits.

Delivery rules:
- a message that cannot be decoded, names an unknown task, or is refused by content
  type is rejected (not requeued) with one ``message_rejected`` event and counted;
- at most `prefetch_count` messages are unacknowledged; ETA and rate-limited
  messages wait in the timer (`holds`), raising the prefetch count meanwhile, so they
  never starve intake;
- early ack (default): a message is acknowledged when its task is handed to a free
  pool slot, and the ack is on the wire before the task can start; late ack
  (``--acks-late`` or ``acks_late=True``): after the task ends. On AMQP acks are
  coalesced into multiple-acks (see `acks`);
- a task whose process died is requeued up to ``max_redeliveries`` times, then
  rejected (dead-lettered when the queue has a dead-letter exchange);
- warm stop: stop consuming, let running tasks finish and their acks go out;
  messages reserved but not started stay unacknowledged and return to the queue;
- a task run inline (solo, a prefork child consuming for itself) that runs long has
  the consumer `hand_back` what is reserved or held (requeued, for idle consumers)
  and stop consuming until `resume`; see keeper.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bootkit import logger
from bootkit_amqp_consumer.acks import Acks
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.delivery import Delivery, receive
from bootkit_amqp_consumer.errors import BadMessageError, BrokerConnectionLostError
from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.holds import Holds
from bootkit_amqp_consumer.inbox import Inbox
from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.losses import Losses
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pools import Pool, SoloPool
from bootkit_amqp_consumer.protocol import TaskRequest, retry_of
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.subscription import QueueProbe, Subscription
from bootkit_amqp_consumer.tasklog import TaskLog
from bootkit_amqp_consumer.timer import Timer
from bootkit_amqp_consumer.transport import Upkeep, drain, fetch, frame_ready, waitables

INTAKE_DELAY = 0.05  # seconds frames may wait while every slot is busy (see _wait)


class TaskConsumer:
    """Consumes the configured queues on `connection` and feeds the pool."""

    def __init__(
        self,
        *,
        app: App,
        config: WorkerConfig,
        pool: Pool,
        timer: Timer,
        backend: Any,
        state: WorkerState,
        connection: Any,
        events: EventDispatcher | None = None,
    ) -> None:
        self.app = app
        self.events = events
        self.config = config
        self.pool = pool
        self.timer = timer
        self.backend = backend
        self.state = state
        self.connection = connection
        self.reserved: deque[Delivery] = deque()
        self.running: dict[str, Delivery] = {}
        self.inbox = Inbox()
        self.holds = Holds(timer, app, state, self.post, self._held_due)  # an ETA or a rate limit
        self._stopping = threading.Event()
        self._deaf = False  # the loop waits without the broker: tell it when tasks run low
        self._draining = False
        self.subscription: Subscription | None = None
        self.probe = QueueProbe(connection, config, state)  # for `hand_back`, autoscale
        self.acks: Acks = Acks(None, coalesce=False)
        self._upkeep = Upkeep(connection)
        # False when the pool's children consume for themselves (pool_children): this
        # loop then serves remote control only.
        self.intake = not getattr(pool, "consumes", False)
        if isinstance(pool, SoloPool):
            pool.consumer = self  # it runs tasks in this loop's thread: see keeper
        self.log = logger().bind(hostname=config.hostname)
        self.task_log = TaskLog(self.log)
        self.losses = Losses(state, events, self.log)

    # -- set-up, called from the step's start ------------------------------------------

    def declare(self) -> None:
        """Open the channel, set the prefetch count and start consuming."""
        if not self.intake:
            return
        self.subscription = Subscription(self.connection, self.config, self.state, self._on_message)
        self.acks = self.subscription.acks
        self.holds.qos = self.subscription.qos
        self.state.on_cold.append(self.subscription.restore_unacked)

    @property
    def qos(self) -> Any:
        """The prefetch count (kombu's `QoS`); None until `declare`."""
        return self.subscription.qos if self.subscription is not None else None

    # -- the loop ------------------------------------------------------------------

    def post(self, callback: Callable[[], None]) -> bool:
        """Run `callback` in the loop thread soon; callable from any thread. False once
        the consumer is closed (its connection is gone): nothing will run it."""
        return self.inbox.post(callback)

    def run(self) -> None:
        """The loop: wait for broker events or posted callbacks until stopped and drained.

        Raises:
            BrokerConnectionLostError: the connection failed; nothing was acked twice.
        """
        errors = (*self.connection.connection_errors, *self.connection.channel_errors, OSError)
        self.inbox.hold()
        try:
            while True:
                self.inbox.run()
                if self.qos is not None:
                    self.qos.update()  # held ETA messages raise it: they must not take a slot
                self.acks.flush()
                if self._stopping.is_set():
                    if not self._draining:
                        self._begin_drain()
                    if not self.running:
                        return
                self._wait(1.0)
                self._upkeep()
        except errors as exc:
            self._abandon()
            raise BrokerConnectionLostError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.inbox.let_go()
            self.pool.unwatch()

    def _abandon(self) -> None:
        """The connection died: stop taking posts, and remember the tasks that finished
        but could not be acknowledged, so their redelivery is not run again."""
        left = self.inbox.refuse()
        for task_id in self.acks.unsent():
            self.state.orphaned(task_id)
        for callback in left:
            if isinstance(callback, functools.partial) and callback.func == self._finished:
                delivery, outcome = callback.args
                if not outcome.lost:
                    self.state.orphaned(delivery.request.id)

    def refill(self) -> None:
        """Hand waiting tasks to free pool slots soon (after the pool grew); any thread."""
        self.post(self._dispatch)

    def stop(self) -> None:
        """Ask the loop to stop consuming and finish once running tasks are done."""
        self._stopping.set()
        self.post(lambda: None)

    def close(self) -> None:
        if self.subscription is not None:
            with contextlib.suppress(ValueError):
                self.state.on_cold.remove(self.subscription.restore_unacked)
        self.inbox.close()

    def raise_in_loop(self, exc: BaseException) -> None:
        """Have the loop raise `exc` as if it had done what raised it (a thread that
        held the turn failed: a broken connection is the loop's to handle)."""
        self.post(functools.partial(_reraise, exc))

    def service(self) -> None:
        """While the loop runs a task inline, by the thread holding the turn it lent
        (see keeper): `hand_back` if it can, and answer the broker: heartbeats, and
        what arrived (remote control)."""
        self.hand_back()
        drain(self.connection, idle=False)
        self._upkeep()

    def hand_back(self) -> int:
        """If this consumer consumes and another one takes from the same queues: stop
        consuming until `resume`, and give every task reserved or held here back to
        the broker (requeued, for that consumer), as the pool's one slot is busy for a
        while. A lone consumer keeps them. By the thread holding the turn. Returns how
        many went back."""
        subscription = self.subscription
        if subscription is None or subscription.paused or self._draining:
            return 0
        if not self.probe.shared():
            return 0  # only this consumer would take them
        subscription.cancel()  # what was sent meanwhile arrives in the reserve: given back
        back = [*self.reserved, *self.holds.take_all()]
        self.reserved.clear()
        if not back:
            return 0
        self.handing_back(back)
        self.state.total -= Counter(d.request.name for d in back)  # counted where they run
        for delivery in back:
            self.acks.reject(delivery.message, requeue=True)
            self._task_event("task-rejected", uuid=delivery.request.id, requeue=True)
        self.log.info("tasks_handed_back", count=len(back), running=list(self.running))
        return len(back)

    def resume(self) -> None:
        """Consume again after `hand_back`, unless the consumer is stopping."""
        subscription = self.subscription  # draining: stopping too
        if subscription is not None and subscription.paused and not self._stopping.is_set():
            subscription.resume()

    def _begin_drain(self) -> None:
        self._draining = True
        if self.subscription is not None:
            try:
                self.subscription.cancel()
            except Exception:
                self.log.debug("consumer_cancel_failed", exc_info=True)
        self.log.info("consumer_draining", running=len(self.running), reserved=len(self.reserved))

    def _wait(self, timeout: float) -> None:
        # On Redis, what the queues hold is taken in one round trip, not waited for; the
        # wait then only looks (control requests, outcomes) and the next turn takes more.
        taken = fetch(self.connection)
        broker = waitables(self.connection)
        if broker is None:
            # Memory and filesystem transports poll inside drain_events, which the wake
            # pipe cannot interrupt: posts wait at most 50 ms.
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=0.05 if self.inbox.empty() else 0)
            return
        outcomes = self.pool.watch()  # a process pool's pipes: outcomes come straight here
        if self.reserved and len(self.running) >= self.pool.size:
            # Every slot is busy and tasks wait for one: what the broker sends can wait
            # for the next outcome (the drain below reads it then), costing no wake-up
            # of its own. Control requests and heartbeats wait at most INTAKE_DELAY.
            fds, timeout = outcomes, min(timeout, INTAKE_DELAY)
            self._deaf = True
        else:
            fds = [*outcomes, *broker]
            timeout = 0 if taken or frame_ready(self.connection) else timeout
            self._deaf = False
        readable, idle = self.inbox.wait(fds, timeout)
        idle = idle and not taken  # a look, not an idle turn: kombu's upkeep can wait
        if outcomes:
            self.pool.collect(readable)
            self.inbox.run()  # freed slots take their next task before intake runs
        drain(self.connection, readable, idle)

    # -- extension points: a prefork child consuming for itself overrides them ---------

    def redelivered_unknown(self, delivery: Delivery) -> bool:
        """Called in the loop for a redelivered task this worker knows nothing of,
        before it is accepted. True: taken care of here (acknowledged, rejected, or to
        be accepted later); False, the default: run it."""
        return False

    def handing_back(self, deliveries: list[Delivery]) -> None:
        """Called by `hand_back` just before `deliveries` are requeued. Does nothing by
        default."""

    # -- intake ----------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        self.acks.received(message)
        try:
            delivery = receive(message, self.app, self.config)
        except BadMessageError as exc:
            if exc.task_id is not None:
                self._task_event("task-rejected", uuid=exc.task_id, requeue=False)
            self._reject(message, exc.reason, exc.detail)
            return
        request = delivery.request
        self.task_log.received(request)
        if self._seen_before(delivery):
            return
        self._accept(delivery)

    def _accept(self, delivery: Delivery) -> None:
        """Count, announce and reserve (or hold until its ETA) a task to run."""
        request = delivery.request
        self.state.total[request.name] += 1
        if self.events is not None and self.events.task_events:
            self.events.task_received(request)
        if request.eta is not None:
            now = datetime.now(UTC)
            if request.eta > now:
                if self._discard_if_stale(delivery):
                    return
                delivery.eta = request.eta
                self.holds.hold(delivery, (request.eta - now).total_seconds())
                return
        self.reserved.append(delivery)  # _dispatch discards it if revoked or expired
        self._dispatch()

    def _seen_before(self, delivery: Delivery) -> bool:
        """A redelivery of a task this worker runs or ran (its ack was lost with an
        earlier connection): wait for that run, or acknowledge it; never run it twice.
        False: run it."""
        request = delivery.request
        redelivered = bool((delivery.message.delivery_info or {}).get("redelivered"))
        seen = self.state.adopt(
            request.id,
            lambda outcome: self.post(lambda: self._finished(delivery, outcome)),
            redelivered=redelivered,
            retries=request.retries,
        )
        if seen == "done":
            self._already_done(delivery)
        elif seen == "running":  # here: that run's outcome settles this delivery too
            self.log.info("task_already_running", task=request.name, task_id=request.id)
        elif redelivered:
            return self.redelivered_unknown(delivery)
        return bool(seen)

    def _already_done(self, delivery: Delivery) -> None:
        self._ack(delivery)
        self.log.info("task_already_done", task=delivery.request.name, task_id=delivery.request.id)

    def _task_event(self, event_type: str, **fields: Any) -> None:
        if self.events is not None and self.events.task_events:
            self.events.send(event_type, **fields)

    def _held_due(self, delivery: Delivery) -> None:
        if self._draining:
            return  # unacked: it returns to the queue when the channel closes
        self.reserved.appendleft(delivery)
        self._dispatch()

    def _reject(self, message: Any, reason: str, detail: str) -> None:
        self.state.rejected[reason] += 1
        self.log.warning(
            "message_rejected",
            reason=reason,
            detail=detail[:300],
            content_type=message.content_type,
            delivery_tag=message.delivery_tag,
        )
        self.acks.reject(message, requeue=False)

    def _ack(self, delivery: Delivery) -> None:
        delivery.acked = True
        self.acks.ack(delivery.message, delivery.request.id)
        self.state.acknowledged(delivery.request.id, delivery.request.retries)

    def _discard_if_stale(self, delivery: Delivery) -> bool:
        """Ack and record a revoked or expired task instead of running it."""
        request = delivery.request
        why = delivery.stale(self.state)
        if why is None:
            return False
        self._ack(delivery)
        self.losses.revoked(request.id, request.name, self._backend_for(request), why)
        return True

    def _dispatch(self) -> None:
        """Hand reserved tasks to free pool slots: early acks first, all in one flush,
        so none can start before its ack is on the wire."""
        # Not once a stop is asked for, even before the drain begins: a task finishing in
        # the meantime must not start the next (the solo pool would run them all).
        free = self.pool.size - len(self.running)
        starting: list[Delivery] = []
        while self.reserved and len(starting) < free and not self._stopping.is_set():
            delivery = self.reserved.popleft()
            if self._discard_if_stale(delivery) or self.holds.rate_limited(delivery):
                continue
            if not delivery.acks_late:
                self._ack(delivery)
            starting.append(delivery)
        if not starting:
            return
        try:
            self.acks.flush()
        except BaseException:  # none of them started: each must run when redelivered
            for delivery in starting:
                self.acks.forget(delivery.message)
                self.state.forget_ack(delivery.request.id, delivery.request.retries)
            raise
        for delivery in starting:
            self._start(delivery)

    def _start(self, delivery: Delivery) -> None:
        request = delivery.request
        delivery.started_at = time.time()
        self.running[request.id] = delivery
        self.state.began(request.id)
        job = delivery.job(self.app.tasks[request.name], self.config.hostname)
        self.pool.submit(job, functools.partial(self._job_done, delivery))
        self._task_event("task-started", uuid=request.id)

    # -- completion ----------------------------------------------------------------

    def _backend_for(self, request: TaskRequest) -> Any:
        """The result backend when this task's result is kept, else None."""
        return None if request.ignore_result else self.backend

    def _job_done(self, delivery: Delivery, outcome: Outcome) -> None:
        """Called by the pool from its own thread: store the result, then tell the loop."""
        request = delivery.request
        backend = self._backend_for(request)
        if backend is not None and not outcome.lost and outcome.state != "RETRY":
            try:
                backend.store_outcome(outcome)
            except Exception:
                self.log.exception("result_store_failed", task_id=request.id)
        waiting = self.state.ended(request.id)
        finished = functools.partial(self._finished, delivery, outcome)
        handled = self._take_turn(finished) or self.post(finished)
        if not handled and waiting is None and not outcome.lost:
            self.state.orphaned(request.id)
        if waiting is not None:
            waiting(outcome)

    def _take_turn(self, finished: Callable[[], None]) -> bool:
        """Run `finished` and the next task's hand-off here, in the pool's thread, when
        the loop is waiting: no wake-up of the loop and back. False: post it instead."""
        if self._stopping.is_set() or not self.inbox.take_turn():
            return False
        try:
            finished()
            self.qos.update()
            self.acks.flush()
            if self._deaf and len(self.reserved) < self.pool.size:
                self.post(lambda: None)  # the loop reads the broker before tasks run out
        except BaseException as exc:
            self.raise_in_loop(exc)
        finally:
            self.inbox.give_turn()
        return True

    def _finished(self, delivery: Delivery, outcome: Outcome) -> None:
        request = delivery.request
        self.running.pop(request.id, None)
        self.state.runtimes.observe(outcome.runtime)
        if outcome.lost:
            self._lost(delivery, outcome)
            self._dispatch()
            return
        if outcome.state == "RETRY":
            self._retry(delivery, outcome)
        self.task_log.ended(request, outcome)
        if self.events is not None and self.events.task_events:
            self.events.task_ended(request.id, outcome)
        if delivery.acks_late and not delivery.acked:
            self._ack(delivery)
        self.state.processed[outcome.state.lower()] += 1
        self._dispatch()

    def _lost(self, delivery: Delivery, outcome: Outcome) -> None:
        """Its process died: terminated, if it was revoked (never requeued); else lost,
        requeued or rejected when acked late (see losses)."""
        request = delivery.request
        backend = self._backend_for(request)
        if self.state.is_revoked(request.id):
            if delivery.acks_late:
                self._ack(delivery)
            self.losses.revoked(request.id, request.name, backend, "terminated")
            return
        requeue = self.losses.lost(
            outcome,
            request.name,
            backend,
            acks_late=delivery.acks_late,
            max_redeliveries=self.config.max_redeliveries,
        )
        if delivery.acks_late:
            self.acks.reject(delivery.message, requeue=requeue)

    def _retry(self, delivery: Delivery, outcome: Outcome) -> None:
        request = delivery.request
        assert self.subscription is not None  # a task ran: the loop is consuming
        message = retry_of(request, outcome.countdown)
        self.subscription.publish_back(message, delivery.message.delivery_info or {})
        if (backend := self._backend_for(request)) is not None:
            backend.store(request.id, "RETRY")


def _reraise(error: BaseException) -> None:
    raise error
