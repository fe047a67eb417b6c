"""Celery's pidbox, the client side: send a control request to workers and collect replies.

Requests go to the fanout exchange ``celery.pidbox``; each worker consumes
``<nodename>.celery.pidbox``. Replies come back on the direct exchange
``reply.celery.pidbox`` with the caller's routing key, into a queue of the caller's.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer
from kombu.utils.json import dumps as json_dumps

PIDBOX = Exchange("celery.pidbox", "fanout", durable=False, auto_delete=False, delivery_mode=1)
REPLY = Exchange("reply.celery.pidbox", "direct", durable=False, auto_delete=False, delivery_mode=1)

Reply = dict[str, Any]  # {nodename: what the command returned}


def node_queue(nodename: str) -> Queue:
    """The queue a worker takes its requests from, as Celery names and declares it."""
    return Queue(
        f"{nodename}.celery.pidbox",
        PIDBOX,
        auto_delete=True,
        durable=False,
        queue_arguments={"x-message-ttl": 300_000, "x-expires": 10_000},
    )


def reply_queue(oid: str) -> Queue:
    return Queue(
        f"{oid}.reply.celery.pidbox",
        REPLY,
        routing_key=oid,
        auto_delete=True,
        durable=False,
        queue_arguments={"x-expires": 10_000},
    )


def request(
    method: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    destination: Sequence[str] | None = None,
    pattern: str | None = None,
    matcher: str | None = None,
    ticket: str | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """A request body; `ticket` and `reply_to` (the caller's routing key) when a reply is wanted."""
    body: dict[str, Any] = {
        "method": method,
        "arguments": dict(arguments or {}),
        "destination": list(destination) if destination else None,
        "pattern": pattern,
        "matcher": matcher,
    }
    if ticket is not None and reply_to is not None:
        body["ticket"] = ticket
        body["reply_to"] = {"exchange": REPLY.name, "routing_key": reply_to}
    return body


def broadcast(
    connection: Any,
    method: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    destination: Sequence[str] | None = None,
    timeout: float = 10.0,
    clock: int = 0,
) -> None:
    """Send a request to every worker (or `destination`) without waiting for replies."""
    with connection.channel() as channel:
        _publish(channel, request(method, arguments, destination=destination), timeout, clock)


def call(
    connection: Any,
    method: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    destination: Sequence[str] | None = None,
    pattern: str | None = None,
    matcher: str | None = None,
    timeout: float = 1.0,
    expected: int | None = None,
    quiet: float | None = None,
    clock: int = 0,
    on_reply: Callable[[Reply, Mapping[str, Any]], None] | None = None,
) -> list[Reply]:
    """Send a request and collect replies, one ``{nodename: result}`` per worker.

    Returns when `timeout` passes, or sooner: once `expected` replies came (by
    default one per `destination`; on Redis, as many as the request reached, which
    the broker tells); else, with `quiet`, once no reply came for `quiet` seconds.
    `on_reply` sees each reply with its message headers (``clock``) as it arrives.
    """
    if expected is None and destination:
        expected = len(destination)
    oid = uuid.uuid4().hex
    ticket = uuid.uuid4().hex
    replies: list[Reply] = []

    def on_message(message: Any) -> None:
        headers = message.headers or {}
        if headers.get("ticket") != ticket:
            return
        try:
            body = message.decode()
        except Exception:
            return
        if isinstance(body, dict):
            replies.append(body)
            heard[0] = time.monotonic()
            if on_reply is not None:
                on_reply(body, headers)

    deadline = time.monotonic() + timeout
    heard = [time.monotonic()]
    with connection.channel() as channel:
        consumer = Consumer(
            channel,
            [reply_queue(oid)],
            on_message=on_message,
            no_ack=True,
            accept=["application/json"],
        )
        consumer.consume()
        try:
            body = request(
                method,
                arguments,
                destination=destination,
                pattern=pattern,
                matcher=matcher,
                ticket=ticket,
                reply_to=oid,
            )
            reached = _publish(channel, body, timeout, clock)
            if expected is None:
                expected = reached
            heard[0] = time.monotonic()
            while expected is None or len(replies) < expected:
                now = time.monotonic()
                left = deadline - now
                if quiet is not None and expected is None:
                    left = min(left, heard[0] + quiet - now)
                if left <= 0:
                    break
                try:
                    connection.drain_events(timeout=min(left, 0.1))
                except TimeoutError:
                    continue
        finally:
            with contextlib.suppress(Exception):  # the channel goes with the block anyway
                consumer.cancel()
    return replies


def _publish(channel: Any, body: Mapping[str, Any], timeout: float, clock: int) -> int | None:
    """Publish a request; how many consumers it reached when the broker says (Redis)."""
    with _counting_fanout(channel) as reached:
        Producer(channel).publish(
            dict(body),
            exchange=PIDBOX,
            routing_key="",
            declare=[PIDBOX],
            serializer="json",
            headers={"clock": clock, "expires": time.time() + timeout if timeout else 0},
            retry=True,
        )
    return reached[0] if reached else None


@contextlib.contextmanager
def _counting_fanout(channel: Any) -> Iterator[list[int]]:
    """On Redis, count the subscribers a fanout publish reached.

    Redis answers PUBLISH with the number of subscribers that got the message;
    kombu's Redis channel drops that number, so for the duration of the block its
    fanout publish is done here, the same way (one PUBLISH of kombu's JSON envelope
    per topic), keeping the count. Other transports are left alone.
    """
    reached: list[int] = []
    topics: Any = getattr(channel, "_get_publish_topics", None)
    acquire: Any = getattr(channel, "conn_or_acquire", None)
    redis = getattr(getattr(channel, "connection", None), "driver_type", None) == "redis"
    if not redis or topics is None or acquire is None:
        yield reached
        return

    def put_fanout(exchange: str, message: Any, routing_key: str, **kwargs: Any) -> None:
        payload = json_dumps(message)
        with acquire() as client:
            reached.append(
                sum(int(client.publish(t, payload)) for t in topics(exchange, routing_key))
            )

    channel._put_fanout = put_fanout
    try:
        yield reached
    finally:
        del channel._put_fanout
