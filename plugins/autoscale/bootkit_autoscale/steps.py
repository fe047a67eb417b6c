"""``autoscale.pool``: once a second, grow the pool for waiting tasks, shrink it after a
cooldown without backlog."""

from __future__ import annotations

import time
from typing import Any

from bootkit import Condition, ConfigError, Context, Settings, Step, StopReason, logger
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pools import Pool
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.timer import Entry, Timer
from bootkit_autoscale.plugin import DEFAULT_COOLDOWN

TICK = 1.0  # seconds between two looks at the load


def parse(spec: str) -> tuple[int, int]:
    """(max, min) from "MAX,MIN" (or "MAX": min 1). Raises: ConfigError."""
    parts = [p.strip() for p in str(spec).split(",")]
    try:
        high = int(parts[0])
        low = int(parts[1]) if len(parts) > 1 else 1
    except (ValueError, IndexError):
        raise ConfigError(f"--autoscale takes MAX,MIN (two whole numbers), got {spec!r}") from None
    if len(parts) > 2 or not 1 <= low <= high:
        raise ConfigError(f"--autoscale MAX,MIN needs 1 <= MIN <= MAX, got {spec!r}")
    return high, low


class Scaler:
    """The decision, apart from the clock and the pool: what size, given the load."""

    def __init__(self, high: int, low: int, cooldown: float, now: float) -> None:
        self.high, self.low, self.cooldown = high, low, cooldown
        self.last_busy = now

    def decide(self, size: int, busy: int, waiting: int, now: float) -> int:
        """The size the pool should have now."""
        if waiting > 0 or busy >= size:
            self.last_busy = now
        if waiting > 0 and size < self.high:
            return min(self.high, size + waiting)
        if size > self.low and now - self.last_busy >= self.cooldown:
            return max(self.low, busy)
        return size


class Autoscale(Step):
    """Resizes the pool by load (``--autoscale MAX,MIN``)."""

    name = "autoscale.pool"
    blueprint = "worker"
    requires = ("amqp.pool", "amqp.timer", "amqp.app")
    after = ("amqp.consumer",)

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        if not settings.option("autoscale"):
            return Condition.off("autoscale is not set")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        high, low = parse(ctx.settings.option("autoscale"))
        self.pool: Pool = ctx.get(Pool)  # type: ignore[type-abstract]
        if self.pool.kind == "solo":
            raise ConfigError("--autoscale needs -P threads or -P prefork; solo runs one task")
        cooldown = float(ctx.settings.option("autoscale_cooldown", DEFAULT_COOLDOWN))
        self.config = ctx.get(WorkerConfig)
        self.state = ctx.get(WorkerState)
        self.scaler = Scaler(high, low, cooldown, time.monotonic())
        self.tuned: Any = None  # the consumer whose prefetch is set for MAX
        self.pending: Any = None  # the consumer a look was posted to (children's intake)
        self.log = logger().bind(hostname=self.config.hostname)
        if self.pool.size > low:
            self.pool.shrink(self.pool.size - low)
        elif self.pool.size < low:
            self.pool.grow(low - self.pool.size)
        self.state.stats_sections["autoscaler"] = self.info
        self.entry: Entry = ctx.get(Timer).call_repeatedly(TICK, self.tick)
        self.log.info("pool_autoscaled", size=self.pool.size, max=high, min=low)

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.entry.cancel()
        self.state.stats_sections.pop("autoscaler", None)

    def info(self) -> dict[str, Any]:
        s = self.scaler
        return {"max": s.high, "min": s.low, "qty": self.pool.size, "cooldown": s.cooldown}

    def tick(self) -> None:
        consumer = self.state.consumer
        if consumer is None:
            return  # reconnecting
        if not consumer.intake:
            self._tick_children(consumer)
            return
        if consumer is not self.tuned and consumer.qos is not None:
            # Reserve for MAX, so tasks waiting for a slot show.
            extra = (self.scaler.high - self.config.concurrency) * self.config.prefetch_multiplier
            if extra > 0:
                consumer.qos.increment_eventually(extra)
            elif extra < 0:
                consumer.qos.decrement_eventually(-extra)
            self.tuned = consumer
        self._scale(consumer, len(consumer.running), len(consumer.reserved))

    def _tick_children(self, consumer: Any) -> None:
        """The children consume for themselves: the tasks waiting are those they hold
        (asked over their pipes, here in the timer's thread) and those still ready in
        the broker's queues (asked in the consumer's loop, which owns the connection)."""
        if self.pending is consumer:
            return  # its loop has not run the last look yet: no two see one backlog
        busy = len(self.pool.active())
        children: Any = self.pool  # pool_children.Children
        held = sum(len(report["reserved"]) for report in children.gather())

        connection = consumer.connection
        broken = (*connection.connection_errors, *connection.channel_errors, OSError)

        def scale() -> None:
            self.pending = None
            try:
                self._scale(consumer, busy, held + consumer.probe.backlog())
            except broken:
                raise  # the loop's to handle: it reconnects
            except Exception:
                self.log.exception("autoscale_failed")

        self.pending = consumer  # before the post: the loop may run it at once
        if not consumer.post(scale):
            self.pending = None

    def _scale(self, consumer: Any, busy: int, waiting: int) -> None:
        size = self.pool.size
        want = self.scaler.decide(size, busy, waiting, time.monotonic())
        if want > size:
            self.pool.grow(want - size)
            consumer.refill()
        elif want < size:
            self.pool.shrink(size - want)
        else:
            return
        self.log.info("pool_autoscaled", size=want, was=size)
