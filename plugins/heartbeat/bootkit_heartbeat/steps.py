"""``heartbeat.beat``: worker-online once the consumer is ready, worker-heartbeat every
interval, worker-offline on stop.

Each event carries ``freq`` (the interval), ``active`` (tasks running now),
``processed`` (tasks finished since the worker started) and ``loadavg``, besides what
every event and every worker event carries. It runs in the consumer blueprint, so a
reconnect sends offline and online again, as Celery's does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bootkit import ConfigError, Context, Step, StopReason, logger
from bootkit_amqp_consumer.consumer import TaskConsumer
from bootkit_amqp_consumer.control import Command, Commands
from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.timer import Entry, Timer
from bootkit_heartbeat.plugin import DEFAULT_INTERVAL


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not every platform has it
        return [0.0, 0.0, 0.0]


class Heartbeat(Step):
    """Sends this worker's worker-online, worker-heartbeat and worker-offline events."""

    name = "heartbeat.beat"
    blueprint = "consumer"
    requires = ("events.dispatcher",)
    after = ("amqp.loop",)  # online means ready: everything else of the consumer runs

    def start(self, ctx: Context) -> None:
        self.interval = float(ctx.settings.option("heartbeat_interval", DEFAULT_INTERVAL))
        if self.interval <= 0:
            raise ConfigError(f"--heartbeat-interval must be above 0, got {self.interval:g}")
        self.dispatcher = ctx.get(EventDispatcher)
        self.state = ctx.get(WorkerState)
        self.consumer = ctx.find(TaskConsumer)
        self.commands = ctx.get(Commands)
        self.commands.register(
            Command("heartbeat", self._command, "control", help="Send a worker-heartbeat now.")
        )
        self._send("worker-online")
        self.entry: Entry = ctx.get(Timer).call_repeatedly(
            self.interval, lambda: self._send("worker-heartbeat")
        )

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.entry.cancel()
        self.commands.unregister("heartbeat")
        self._send("worker-offline")

    def fields(self) -> dict[str, Any]:
        active = len(self.consumer.running) if self.consumer is not None else 0
        done = ("success", "failure", "retry")
        processed = sum(self.state.processed[k] for k in done)
        return self.dispatcher.worker_fields(
            freq=self.interval, active=active, processed=processed, loadavg=loadavg()
        )

    def _send(self, event_type: str) -> None:
        self.dispatcher.send(event_type, **self.fields())

    def _command(self, arguments: Mapping[str, Any]) -> Any:
        self._send("worker-heartbeat")
        logger().debug("heartbeat_sent_on_request", hostname=self.dispatcher.hostname)
        return {"ok": "heartbeat sent"}
