"""Remote control, the worker side: answers Celery's pidbox requests.

Commands live in a `Commands` registry that outlives consumer restarts; the worker's
own (``ping``, ``stats``, ``revoke``, ...) are registered by the ``control.pidbox``
step, and other plugins add theirs (``heartbeat``, ``election``) from their own steps.

Destructive commands (shutdown, terminate, pool and consumer changes, limits) run only
when named in the ``control_allow`` setting; otherwise the reply is an error and a
``control_command_refused`` event is logged. Handlers run in the consumer's loop
thread: the request arrived on its connection.
"""

from __future__ import annotations

import fnmatch
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kombu.messaging import Consumer, Producer

from bootkit import logger
from bootkit_amqp_consumer.clock import LamportClock
from bootkit_amqp_consumer.pidbox import REPLY, node_queue

Handler = Callable[[Mapping[str, Any]], Any]
Gate = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class Command:
    """A control command.

    Attributes:
        kind: ``inspect`` (reads) or ``control`` (acts); the CLI groups them so.
        gate: the allowlist name this request needs (``"shutdown"``), or a function of
            the arguments giving it (``revoke`` needs ``terminate`` only to terminate);
            None for commands any client may send.
    """

    name: str
    handler: Handler
    kind: Literal["inspect", "control"] = "inspect"
    gate: str | Gate | None = None
    help: str = ""

    def needs(self, arguments: Mapping[str, Any]) -> str | None:
        """The allowlist entry this call needs, if any."""
        if self.gate is None or isinstance(self.gate, str):
            return self.gate
        return self.gate(arguments)


class Commands:
    """The registry of control commands; thread-safe."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._lock = threading.Lock()

    def register(self, *commands: Command) -> None:
        with self._lock:
            for command in commands:
                self._commands[command.name] = command

    def unregister(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self._commands.pop(name, None)

    def get(self, name: str) -> Command | None:
        with self._lock:
            return self._commands.get(name)

    def __iter__(self) -> Iterator[Command]:
        with self._lock:
            return iter(sorted(self._commands.values(), key=lambda c: c.name))


class ControlServer:
    """Consumes ``<nodename>.celery.pidbox`` on `connection` and answers requests."""

    def __init__(
        self,
        *,
        connection: Any,
        nodename: str,
        commands: Commands,
        allow: frozenset[str],
        clock: LamportClock,
    ) -> None:
        self.connection = connection
        self.nodename = nodename
        self.commands = commands
        self.allow = allow
        self.clock = clock
        self.channel: Any = None
        self.log = logger().bind(hostname=nodename)

    def start(self) -> None:
        self.channel = self.connection.channel()
        consumer = Consumer(
            self.channel,
            [node_queue(self.nodename)],
            on_message=self._on_message,
            no_ack=True,
            accept=["application/json"],
        )
        consumer.consume()

    def stop(self) -> None:
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:
                self.log.debug("control_channel_close_failed", exc_info=True)

    def addressed_to_me(self, body: Mapping[str, Any]) -> bool:
        destination = body.get("destination")
        if destination:
            return isinstance(destination, list) and self.nodename in destination
        pattern, matcher = body.get("pattern"), body.get("matcher")
        if isinstance(pattern, str) and pattern:
            if matcher == "pcre":
                try:
                    return re.search(pattern, self.nodename) is not None
                except re.error:
                    return False
            return fnmatch.fnmatch(self.nodename, pattern)
        return True

    def allowed(self, name: str) -> bool:
        return name in self.allow or "all" in self.allow

    def handle(self, method: object, arguments: Mapping[str, Any]) -> Any:
        """Run one command; the reply (``{"error": ...}`` when refused or failed)."""
        command = self.commands.get(method) if isinstance(method, str) else None
        if command is None:
            self.log.warning("control_unknown_command", method=method)
            return {"error": f"no such command: {method}"}
        needs = command.needs(arguments)
        if needs is not None and not self.allowed(needs):
            self.log.warning("control_command_refused", method=method, needs=needs)
            return {
                "error": f"{needs} is not allowed on this worker "
                f"(allow it with --control-allow {needs})"
            }
        try:
            return command.handler(arguments)
        except Exception as exc:
            self.log.exception("control_command_failed", method=method)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _on_message(self, message: Any) -> None:
        headers = message.headers or {}
        self.clock.adjust(headers.get("clock"))
        try:
            body = message.decode()
        except Exception as exc:
            self.log.warning("control_message_rejected", reason=f"{type(exc).__name__}: {exc}")
            return
        if not isinstance(body, dict) or not self.addressed_to_me(body):
            return
        expires = headers.get("expires") or 0
        if isinstance(expires, int | float) and expires and time.time() > expires:
            self.log.info("control_request_expired", method=body.get("method"))
            return
        arguments = body.get("arguments")
        reply = self.handle(body.get("method"), arguments if isinstance(arguments, dict) else {})
        target = body.get("reply_to")
        if reply is None or not body.get("ticket") or not isinstance(target, dict):
            return
        try:
            Producer(self.channel).publish(
                {self.nodename: reply},
                exchange=target.get("exchange") or REPLY.name,
                routing_key=target.get("routing_key"),
                serializer="json",
                headers={"ticket": body["ticket"], "clock": self.clock.forward()},
                delivery_mode=1,
            )
        except (TypeError, ValueError) as exc:  # a reply JSON cannot carry
            self.log.error("control_reply_failed", method=body.get("method"), error=str(exc))
