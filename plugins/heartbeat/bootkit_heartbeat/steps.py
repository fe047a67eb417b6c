"""``heartbeat.beat``: worker-online once the consumer is ready, worker-heartbeat every
interval, worker-offline on stop, as Celery's monitors and gossip expect them.

Each event carries ``freq`` (the interval), ``active`` (tasks running now),
``processed`` (tasks finished since the worker started) and ``loadavg``, besides the
fields of every event and of every worker event. It runs in the consumer blueprint, so
a reconnect sends offline and online again, as Celery's does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bootkit import Condition, Context, Settings, Step, StopReason, logger
from bootkit_amqp_consumer.consumer import TaskConsumer
from bootkit_amqp_consumer.control import Command, Commands
from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.timer import Entry, Timer
from bootkit_heartbeat.plugin import DEFAULT_INTERVAL

FINISHED = ("success", "failure", "retry")  # outcomes of a task that ran (WorkerState.processed)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded as Celery sends them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not every platform has it
        return [0.0, 0.0, 0.0]


class Heartbeat(Step):
    """Sends this worker's worker-online, worker-heartbeat and worker-offline events."""

    name = "heartbeat.beat"
    blueprint = "consumer"
    requires = ("events.dispatcher",)
    after = ("amqp.loop",)  # online means ready: the rest of the consumer runs

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        disabled = settings.disabled_by("events.dispatcher")
        if disabled is not None:
            return Condition.off(f"it needs events.dispatcher, disabled by {disabled.describe()}")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        self.interval = float(ctx.settings.option("heartbeat_interval", DEFAULT_INTERVAL))
        self.dispatcher = ctx.get(EventDispatcher)
        self.state = ctx.get(WorkerState)
        self.consumer = ctx.find(TaskConsumer)
        self.commands = ctx.get(Commands)
        self.commands.register(
            Command("heartbeat", self._command, "control", help="Send a worker-heartbeat now.")
        )
        timer = ctx.get(Timer)
        # From the timer's thread, which then keeps the order online, heartbeats: the
        # first event may open the dispatcher's connection, and boot need not wait.
        self.online: Entry = timer.call_later(0, lambda: self._send("worker-online"))
        self.entry: Entry = timer.call_repeatedly(
            self.interval, lambda: self._send("worker-heartbeat")
        )

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.online.cancel()
        self.entry.cancel()
        self.commands.unregister("heartbeat")
        self._send("worker-offline")

    def fields(self) -> dict[str, Any]:
        """The worker-event fields as of now."""
        consumer = self.consumer
        if consumer is None:
            active = 0
        else:  # children consuming for themselves (pool_children) announce what they run
            active = len(consumer.running if consumer.intake else consumer.pool.active())
        processed = sum(self.state.processed[outcome] for outcome in FINISHED)
        return self.dispatcher.worker_fields(
            freq=self.interval, active=active, processed=processed, loadavg=loadavg()
        )

    def _send(self, event_type: str) -> None:
        self.dispatcher.send(event_type, **self.fields())

    def _command(self, arguments: Mapping[str, Any]) -> Any:
        self._send("worker-heartbeat")
        logger().debug("heartbeat_sent_on_request", hostname=self.dispatcher.hostname)
        return {"ok": "heartbeat sent"}
