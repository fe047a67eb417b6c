"""Tasks the timer holds until they may run: an ETA still to come, or a rate limit
with no token left for now.

A held task is reserved from the broker but does not count against the prefetch limit:
the prefetch count rises while it waits, so other tasks keep coming.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.delivery import Delivery
from bootkit_amqp_consumer.ratelimit import RateLimits
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.timer import Timer


class Holds:
    """The held tasks of one consumer, by task id; each goes to `due` in the loop's
    thread (through `post`) when its time comes."""

    def __init__(
        self,
        timer: Timer,
        app: App,
        state: WorkerState,
        post: Callable[[Callable[[], None]], object],
        due: Callable[[Delivery], None],
    ) -> None:
        self.timer = timer
        self.app = app
        self.post = post
        self.due = due
        self.tasks: dict[str, Delivery] = {}
        self.rate_limits = RateLimits(state.rate_limits)
        self.qos: Any = None  # the consumer's prefetch count (kombu's `QoS`), once it consumes

    def hold(self, delivery: Delivery, delay: float) -> None:
        """Keep `delivery` for `delay` seconds."""
        self.qos.increment_eventually()
        self.tasks[delivery.request.id] = delivery
        self.timer.call_later(delay, lambda: self.post(lambda: self._release(delivery)))

    def rate_limited(self, delivery: Delivery) -> bool:
        """Hold `delivery` until its task's rate limit lets it run; False: run it now."""
        name = delivery.request.name
        wait = self.rate_limits.wait(name, self.app.tasks[name].rate_limit)
        if wait <= 0:
            return False
        self.hold(delivery, wait)
        return True

    def take_all(self) -> list[Delivery]:
        """Give up every held task (its timer still fires, and finds it gone)."""
        taken = list(self.tasks.values())
        self.tasks.clear()
        for _ in taken:
            self.qos.decrement_eventually()
        return taken

    def _release(self, delivery: Delivery) -> None:
        if self.tasks.get(delivery.request.id) is not delivery:
            return  # taken back (`take_all`) while it waited
        self.qos.decrement_eventually()
        del self.tasks[delivery.request.id]
        self.due(delivery)
