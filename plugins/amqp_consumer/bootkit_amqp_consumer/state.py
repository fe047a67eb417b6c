"""Worker state that outlives a consumer restart: revoked ids, the clock and counters."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bootkit_amqp_consumer.clock import LamportClock

REVOKES_MAX = 50_000  # revoked ids kept; the oldest go first (as Celery's default)
REVOKE_EXPIRES = 10_800.0  # seconds a revoked id is kept (as Celery's default)
DONE_UNACKED_MAX = 10_000  # finished tasks whose ack was lost, remembered for redelivery
ACKED_MAX = 10_000  # tasks whose message was acknowledged, remembered for redelivery


RUNTIME_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Runtimes:
    """A histogram of task run times: counts per bound (seconds), total and count.

    Written by the consumer's loop thread only; readers take a consistent-enough view.
    """

    bounds: tuple[float, ...] = RUNTIME_BOUNDS
    counts: list[int] = field(default_factory=lambda: [0] * len(RUNTIME_BOUNDS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        index = bisect.bisect_left(self.bounds, seconds)
        if index < len(self.counts):
            self.counts[index] += 1


@dataclass
class WorkerState:
    """What outlives a consumer restart: counters, revoked ids, redelivery counts, clock."""

    revoked: OrderedDict[str, float] = field(default_factory=OrderedDict)
    lost: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    processed: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)  # tasks received, by task name
    clock: LamportClock = field(default_factory=LamportClock)
    task_events: bool = False  # send task-* events (``-E``, or enable_events)
    # Set by control commands, kept across reconnects: per-task rate limits (tasks a
    # second, None: none), queues added (name -> exchange, type, routing key) or cancelled.
    rate_limits: dict[str, float | None] = field(default_factory=dict)
    added_queues: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    cancelled_queues: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    runtimes: Runtimes = field(default_factory=Runtimes)
    consumer: Any = None  # the TaskConsumer running now; None while reconnecting
    # Tasks in the pool, by id: None, or the callback of a later delivery of the same
    # task (redelivered after a reconnect) that waits for this run's outcome instead of
    # running it again.
    in_pool: dict[str, Callable[[Any], object] | None] = field(default_factory=dict)
    # Tasks that ran to the end after the consumer that took them was gone (their ack
    # went with its connection): their redelivery is acknowledged, not run again.
    done_unacked: OrderedDict[str, float] = field(default_factory=OrderedDict)
    # Tasks whose message this worker acknowledged, the latest ACKED_MAX: an ack written
    # just before the broker dropped the connection is lost with it, and the broker
    # redelivers the message; that redelivery is acknowledged, not run again. Keyed by
    # (id, retries): a retry is a new message with the same id.
    acked: OrderedDict[tuple[str, int], None] = field(default_factory=OrderedDict)
    # Sections other plugins add to `inspect stats` (name -> what to report).
    stats_sections: dict[str, Callable[[], Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Callbacks that hand unacknowledged messages back to the broker at once; the
    # running consumer registers one, a cold shutdown calls them.
    on_cold: list[Callable[[], None]] = field(default_factory=list)
    # Called (without the lock) after revoked ids change, e.g. to persist them.
    on_change: list[Callable[[], None]] = field(default_factory=list)

    def revoke(self, task_id: str, at: float | None = None) -> None:
        with self.lock:
            self._add(task_id, time.time() if at is None else at)
            self._purge()
        self._changed()

    def began(self, task_id: str) -> None:
        """`task_id` was handed to the pool."""
        with self.lock:
            self.in_pool[task_id] = None

    def ended(self, task_id: str) -> Callable[[Any], object] | None:
        """`task_id` left the pool; the redelivery waiting for its outcome, if any."""
        with self.lock:
            return self.in_pool.pop(task_id, None)

    def orphaned(self, task_id: str) -> None:
        """`task_id` finished, but its delivery cannot be acknowledged any more."""
        with self.lock:
            self.done_unacked[task_id] = time.time()
            while len(self.done_unacked) > DONE_UNACKED_MAX:
                self.done_unacked.popitem(last=False)

    def acknowledged(self, task_id: str, retries: int) -> None:
        """The message of `task_id` (its try `retries`) was acknowledged; the ack may
        yet be lost."""
        key = (task_id, retries)
        with self.lock:
            self.acked[key] = None
            self.acked.move_to_end(key)
            if len(self.acked) > ACKED_MAX:
                self.acked.popitem(last=False)

    def forget_ack(self, task_id: str, retries: int) -> None:
        """The ack of `task_id` (its try `retries`) never went out after all: its
        redelivery is to run."""
        with self.lock:
            self.acked.pop((task_id, retries), None)

    def adopt(
        self,
        task_id: str,
        on_outcome: Callable[[Any], object],
        *,
        redelivered: bool = False,
        retries: int = 0,
    ) -> str:
        """A delivery of `task_id` arrived: "running" (it is in the pool; `on_outcome`
        will get the outcome), "done" (it ran to the end already, or this is the
        broker's redelivery of a message acknowledged here), or "" (run it)."""
        with self.lock:
            if task_id in self.in_pool:
                self.in_pool[task_id] = on_outcome
                return "running"
            if self.done_unacked.pop(task_id, None) is not None:
                return "done"
            if redelivered and (task_id, retries) in self.acked:
                return "done"
            return ""

    def is_revoked(self, task_id: str) -> bool:
        with self.lock:
            return task_id in self.revoked

    def merge_revoked(self, revoked: Mapping[str, Any]) -> int:
        """Take ids revoked elsewhere, as mingle sends them (``{id: [ts, id]}`` or
        ``{id: ts}``); malformed entries are skipped. Returns how many were new."""
        new = 0
        with self.lock:
            for task_id, entry in revoked.items():
                at = entry[0] if isinstance(entry, list | tuple) and entry else entry
                if not isinstance(task_id, str) or not isinstance(at, int | float):
                    continue
                if at < time.time() - REVOKE_EXPIRES:
                    continue  # expired where it came from
                new += task_id not in self.revoked
                self._add(task_id, float(at))
            self._purge()
        if new:
            self._changed()
        return new

    def revoked_wire(self, limit: int = REVOKES_MAX) -> dict[str, list[Any]]:
        """The newest `limit` revoked ids in mingle's form ``{id: [ts, id]}``."""
        with self.lock:
            self._purge()
            items = list(self.revoked.items())[-limit:] if limit else []
        return {task_id: [at, task_id] for task_id, at in items}

    def _changed(self) -> None:
        for callback in list(self.on_change):
            callback()

    def _add(self, task_id: str, at: float) -> None:
        known = self.revoked.get(task_id)
        self.revoked[task_id] = at if known is None else max(known, at)
        self.revoked.move_to_end(task_id)

    def _purge(self) -> None:
        horizon = time.time() - REVOKE_EXPIRES
        while self.revoked:
            oldest, at = next(iter(self.revoked.items()))
            if len(self.revoked) <= REVOKES_MAX and at >= horizon:
                break
            del self.revoked[oldest]
