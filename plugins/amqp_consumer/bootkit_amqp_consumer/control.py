"""Remote control over Celery's pidbox: the worker side of ``revoke`` and ``ping``.

Requests arrive on the fanout exchange ``celery.pidbox`` in the queue
``<nodename>.celery.pidbox``; replies go to the direct exchange
``reply.celery.pidbox`` with the client's routing key. The consumer runs on the
worker's broker connection, so its callbacks run in the consumer's loop thread.
"""

from __future__ import annotations

import fnmatch
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer

from bootkit import logger
from bootkit_amqp_consumer.state import WorkerState

PIDBOX = Exchange("celery.pidbox", "fanout", durable=False, auto_delete=False, delivery_mode=1)
REPLY = Exchange("reply.celery.pidbox", "direct", durable=False, auto_delete=False, delivery_mode=1)

Handler = Callable[[Mapping[str, Any]], Any]


def pidbox_queue(nodename: str) -> Queue:
    return Queue(
        f"{nodename}.celery.pidbox",
        PIDBOX,
        auto_delete=True,
        durable=False,
        queue_arguments={"x-message-ttl": 300_000, "x-expires": 10_000},
    )


class Control:
    """Answers control requests addressed to `nodename`."""

    def __init__(self, *, connection: Any, nodename: str, state: WorkerState) -> None:
        self.connection = connection
        self.nodename = nodename
        self.state = state
        self.channel: Any = None
        self.consumer: Any = None
        self.handlers: dict[str, Handler] = {"ping": self.ping, "revoke": self.revoke}
        self.log = logger().bind(hostname=nodename)

    def start(self) -> None:
        self.channel = self.connection.channel()
        self.consumer = Consumer(
            self.channel,
            [pidbox_queue(self.nodename)],
            on_message=self._on_message,
            no_ack=True,
            accept=["application/json"],
        )
        self.consumer.consume()

    def stop(self) -> None:
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:
                self.log.debug("control_channel_close_failed", exc_info=True)

    def addressed_to_me(self, body: Mapping[str, Any]) -> bool:
        destination = body.get("destination")
        if destination:
            return self.nodename in destination
        pattern, matcher = body.get("pattern"), body.get("matcher")
        if pattern:
            if matcher == "pcre":
                return re.search(pattern, self.nodename) is not None
            return fnmatch.fnmatch(self.nodename, pattern)
        return True

    def _on_message(self, message: Any) -> None:
        try:
            body = message.decode()
        except Exception as exc:
            self.log.warning("control_message_rejected", reason=f"{type(exc).__name__}: {exc}")
            return
        if not isinstance(body, dict) or not self.addressed_to_me(body):
            return
        expires = (message.headers or {}).get("expires") or 0
        if expires and time.time() > expires:
            return
        method, arguments = body.get("method"), body.get("arguments") or {}
        handler = self.handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            self.log.warning("control_unknown_command", method=method)
            reply: Any = {"error": f"no such command: {method}"}
        else:
            try:
                reply = handler(arguments if isinstance(arguments, dict) else {})
            except Exception as exc:
                self.log.exception("control_command_failed", method=method)
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        target = body.get("reply_to")
        if body.get("ticket") and isinstance(target, dict):
            Producer(self.channel).publish(
                {self.nodename: reply},
                exchange=target.get("exchange") or REPLY.name,
                routing_key=target.get("routing_key"),
                serializer="json",
                headers={"ticket": body["ticket"], "clock": 0},
            )

    def ping(self, arguments: Mapping[str, Any]) -> Any:
        return {"ok": "pong"}

    def revoke(self, arguments: Mapping[str, Any]) -> Any:
        ids = arguments.get("task_id")
        task_ids = [ids] if isinstance(ids, str) else list(ids or [])
        for task_id in task_ids:
            self.state.revoke(str(task_id))
        self.log.info("tasks_revoked", task_ids=task_ids)
        if arguments.get("terminate"):
            # Killing running tasks from any client is refused until control requests
            # are authenticated; the ids are revoked all the same.
            return {"error": "terminate is not allowed on this worker; the tasks were revoked"}
        return {"ok": f"tasks {', '.join(map(str, task_ids))} flagged as revoked"}


def broadcast(
    connection: Any,
    method: str,
    arguments: Mapping[str, Any],
    *,
    destination: list[str] | None = None,
) -> None:
    """Send a control request to every worker (or `destination`), without waiting for replies."""
    with connection.channel() as channel:
        Producer(channel).publish(
            {
                "method": method,
                "arguments": dict(arguments),
                "destination": destination,
                "pattern": None,
                "matcher": None,
            },
            exchange=PIDBOX,
            routing_key="",
            declare=[PIDBOX],
            serializer="json",
            headers={"clock": 0, "expires": time.time() + 10},
            correlation_id=str(uuid.uuid4()),
        )
