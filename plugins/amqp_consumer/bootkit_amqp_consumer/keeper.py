"""What an AMQP consumer does while its loop thread runs a task inline (the solo pool, a
prefork child consuming for itself): nothing for `HAND_BACK_AFTER` seconds; then, and
every `SERVICE_EVERY` seconds until the task ends, `TaskConsumer.service`: hand back
what it reserved or holds and stop consuming, once another consumer takes from its
queues, so no task waits behind a long one while a consumer is idle; and answer the
broker: heartbeats, so the broker keeps the connection, and remote control requests,
so a busy solo worker still replies to inspect.

The loop lends its turn for the task (`Inbox.lend`), and the keeper's thread takes it
for each of these, so the connection still has one user at a time. The consumer
consumes again once the task has ended and its outcome is reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bootkit import logger

HAND_BACK_AFTER = 0.1  # seconds a task runs before its consumer hands back the rest
SERVICE_EVERY = 0.25  # seconds between two services, after the first

T = TypeVar("T")


class Keeper:
    """One thread for the tasks a loop runs inline, one at a time; it sleeps while the
    loop idles and wakes once per `service_every` while a long task runs. Costs a task
    one uncontended lock, as it starts."""

    def __init__(
        self, after: float = HAND_BACK_AFTER, service_every: float = SERVICE_EVERY
    ) -> None:
        self.after = after
        self.service_every = service_every
        self._cond = threading.Condition()
        self._seq = 0
        self._task: tuple[int, float, Any] | None = None  # seq, started, its consumer
        self._handled = 0  # the seq of the last task kept
        self._idle = False  # waiting with no deadline: `run` must wake it
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bootkit-keeper", daemon=True)
            self._thread.start()

    def run(self, consumer: Any, task: Callable[[], T]) -> T:
        """Run `task` in the loop's thread (which holds `consumer`'s turn), keeping the
        consumer meanwhile. The caller reports the outcome, then calls `consumer.resume`."""
        with self._cond:
            self._seq += 1
            self._task = (self._seq, time.monotonic(), consumer)
            if self._idle:
                self._cond.notify()
        inbox = consumer.inbox
        lent = inbox.lend()
        try:
            return task()
        finally:
            # Before the turn is back, so nothing is done for this task after; one
            # assignment, which `_run` and `_keep` read whole, needs no lock.
            self._task = None
            inbox.take_back(lent)

    def _run(self) -> None:
        while True:
            with self._cond:
                task = self._task
                if task is None:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                seq, started, consumer = task
                if seq != self._handled:  # the first time: once the task has run `after`
                    remaining = started + self.after - time.monotonic()
                    if remaining > 0:
                        self._cond.wait(remaining)
                        continue
                    self._handled = seq
                else:
                    self._cond.wait(self.service_every)
                    if self._task is not task:
                        continue
            self._keep(consumer, seq)

    def _keep(self, consumer: Any, seq: int) -> None:
        if not consumer.inbox.take_turn():  # the loop has it back: the task has ended
            return
        try:
            with self._cond:
                running = self._task is not None and self._task[0] == seq
            if running:
                consumer.service()
        except Exception as exc:  # a broken connection or channel: the loop's to handle
            logger().warning("keeper_failed", error=f"{type(exc).__name__}: {exc}")
            consumer.raise_in_loop(exc)  # once the task has ended
            with self._cond:
                if self._task is not None and self._task[0] == seq:
                    self._task = None  # nothing more for this task
        finally:
            consumer.inbox.give_turn()
