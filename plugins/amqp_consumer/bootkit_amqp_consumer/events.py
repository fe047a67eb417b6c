"""Celery-compatible events: worker-* and task-* events on the ``celeryev`` exchange.

Every event carries ``type, hostname, utcoffset, pid, clock, timestamp``; the clock is
the worker's Lamport clock, moved forward for each event. The exchange is a topic
exchange on AMQP and a fanout on Redis (as Celery declares it); the routing key is the
type with ``-`` as ``.`` (``worker.heartbeat``). Task events are sent only while task
events are on (``-E``, or the ``enable_events`` control command) and go out in batches:
a JSON list under the routing key ``task.multi``, flushed when `buffer_limit` events
wait or `flush_interval` seconds after the first one, whichever comes first.

The dispatcher owns its own broker connection, so any thread may send: the
consumer's loop, the pool's completion threads and the timer.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kombu.entity import Exchange, Queue

from bootkit import logger
from bootkit_amqp_consumer.clock import LamportClock
from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.protocol import TaskRequest

SW_IDENT = "py-bootkit"
SW_SYS = platform.system()


def sw_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bootkit-amqp-consumer")
    except PackageNotFoundError:
        return "0"


def event_exchange(connection: Any) -> Exchange:
    """``celeryev``: topic on AMQP, fanout on Redis (which routes fanout by pattern)."""
    kind = "fanout" if connection.transport.driver_type == "redis" else "topic"
    return Exchange("celeryev", kind, delivery_mode=1)


def event_queue(connection: Any, name: str, routing_key: str) -> Queue:
    """A monitor's queue, as Celery declares them: gone 60 s after its last consumer,
    and events older than 5 s dropped."""
    return Queue(
        name,
        event_exchange(connection),
        routing_key=routing_key,
        auto_delete=True,
        durable=False,
        queue_arguments={"x-message-ttl": 5_000, "x-expires": 60_000},
    )


def utcoffset() -> int:
    """Hours west of UTC, as Celery's events carry it."""
    if time.daylight and time.localtime().tm_isdst > 0:
        return time.altzone // 3600
    return time.timezone // 3600


def routing_key(event_type: str) -> str:
    return event_type.replace("-", ".")


class EventDispatcher:
    """Sends events from any thread over its own connection.

    Args:
        connection: a kombu connection of its own (the dispatcher releases it on close).
        schedule: runs a callback after a delay (the worker's timer); without one,
            task events are sent one by one.
    """

    def __init__(
        self,
        connection: Any,
        *,
        hostname: str,
        clock: LamportClock,
        task_events: bool = False,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
        buffer_limit: int = 100,
        flush_interval: float = 0.1,
    ) -> None:
        self.connection = connection
        self.hostname = hostname
        self.clock = clock
        self.task_events = task_events
        self.pid = os.getpid()
        self.exchange = event_exchange(connection)
        self._schedule = schedule
        self._buffer_limit = buffer_limit
        self._flush_interval = flush_interval
        self._buffer: list[dict[str, Any]] = []
        self._flush_pending = False
        self._lock = threading.Lock()
        self._producer: Any = None
        self._closed = False
        self.sent = 0
        self.dropped = 0
        self.log = logger().bind(hostname=hostname)

    def event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """A stamped event (clock moved forward); not sent."""
        return {
            **fields,
            "type": event_type,
            "hostname": self.hostname,
            "utcoffset": utcoffset(),
            "pid": self.pid,
            "clock": self.clock.forward(),
            "timestamp": time.time(),
        }

    def worker_fields(self, **fields: Any) -> dict[str, Any]:
        """The fields of worker-online/heartbeat/offline that name this software."""
        return {"sw_ident": SW_IDENT, "sw_ver": sw_version(), "sw_sys": SW_SYS, **fields}

    def send(self, event_type: str, **fields: Any) -> None:
        """Send an event now; task-* events only while task events are on, and batched."""
        if event_type.startswith("task-"):
            if self.task_events:
                self._buffer_task_event(self.event(event_type, **fields))
            return
        self._publish(self.event(event_type, **fields), routing_key(event_type))

    def task_received(self, request: TaskRequest) -> None:
        """Send task-received for `request`, with the fields Celery's monitors read."""
        headers = request.headers
        self.send(
            "task-received",
            uuid=request.id,
            name=request.name,
            args=headers.get("argsrepr") or repr(request.args),
            kwargs=headers.get("kwargsrepr") or repr(request.kwargs),
            root_id=request.root_id,
            parent_id=request.parent_id,
            retries=request.retries,
            eta=request.eta.isoformat() if request.eta else None,
            expires=request.expires.isoformat() if request.expires else None,
        )

    def task_ended(self, task_id: str, outcome: Outcome) -> None:
        """Send the event for how task `task_id` ended: task-succeeded, task-retried or
        task-failed (a lost task fails, with no traceback)."""
        if outcome.state == "SUCCESS" and not outcome.lost:
            self.send(
                "task-succeeded",
                uuid=task_id,
                result=repr(outcome.result),
                runtime=outcome.runtime,
            )
            return
        kind = "task-retried" if outcome.state == "RETRY" and not outcome.lost else "task-failed"
        exception = f"{outcome.exc_type}({outcome.exc_message!r})"
        traceback = None if outcome.lost else outcome.traceback
        self.send(kind, uuid=task_id, exception=exception, traceback=traceback)

    def flush(self) -> None:
        """Send the buffered task events now, as one ``task.multi`` message."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            self._flush_pending = False
        if batch:
            self._publish(batch, "task.multi")

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
            try:
                self.connection.release()
            except Exception:
                self.log.debug("events_connection_release_failed", exc_info=True)

    def _buffer_task_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append(event)
            full = len(self._buffer) >= self._buffer_limit or self._schedule is None
            later = not full and not self._flush_pending
            if later:
                self._flush_pending = True
        if full:
            self.flush()
        elif later and self._schedule is not None:
            self._schedule(self._flush_interval, self.flush)

    def _publish(self, body: Mapping[str, Any] | list[dict[str, Any]], key: str) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if self._producer is None:
                    self._producer = self.connection.Producer()
                self._producer.publish(
                    body,
                    exchange=self.exchange,
                    routing_key=key,
                    declare=[self.exchange],
                    serializer="json",
                    headers={"hostname": self.hostname},
                    delivery_mode=1,
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0.2},
                )
                self.sent += 1
            except Exception as exc:  # events are best effort; the consumer watches the broker
                self.dropped += 1
                self._producer = None
                self.log.warning(
                    "event_dropped", routing_key=key, error=f"{type(exc).__name__}: {exc}"
                )
