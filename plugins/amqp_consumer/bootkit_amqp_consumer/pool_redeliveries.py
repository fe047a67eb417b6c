"""What the prefork parent knows of its children's tasks, to judge a redelivery one
of them received (the children's intake, see pool_children): which tasks ended, which
ran elsewhere while their redelivery waited, which a busy child handed back, and which
the other children were asked about.

A redelivery no child runs now and the parent knows nothing of may still have been
acknowledged: the ack can go with a child's connection in the instant before that
child could tell the parent. The other children are asked whether they acknowledged
it; until each one answered, or `CALL_TIMEOUT` passed, the verdict is "wait".

Keys are (task id, retries): a retry is a new message with the same id. Used under
the pool's lock only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from bootkit_amqp_consumer.pool_calls import Call

CALL_TIMEOUT = 2.0  # seconds the parent waits for the children's replies to a call
DONE_MAX = 10_000  # tasks ended by the parent (killed, terminated, orphaned), remembered
HANDED_FOR = 60.0  # seconds a handed-back task's redelivery is taken as one
ASKED_FOR = 60.0  # seconds an ask is kept once its deadline passed, for its child to ask

Key = tuple[str, int]


class Redeliveries:
    """The parent's memory for verdicts (see the module). `end` is given each call
    asking the children that is over."""

    def __init__(self, end: Callable[[Call], None]) -> None:
        self._end = end
        self._done: OrderedDict[Key, None] = OrderedDict()  # their redeliveries: ack
        self._ran: dict[Key, None] = {}  # a redelivery waited while these ran elsewhere
        self._handed: OrderedDict[Key, float] = OrderedDict()  # not run: run at once
        self._asked: dict[Key, tuple[float, Call]] = {}  # deadline, the call

    def ended(self, task_id: str, retries: int) -> None:
        """The task ended with its ack given (or its outcome recorded) by the parent."""
        key = (task_id, retries)
        self._done[key] = None
        self._done.move_to_end(key)
        while len(self._done) > DONE_MAX:
            self._done.popitem(last=False)

    def handed(self, keys: list[Key]) -> None:
        """A busy child gave these back to the broker, unrun."""
        now = time.monotonic()
        for key in keys:
            self._handed[key] = now
            self._handed.move_to_end(key)
        while self._handed and (
            len(self._handed) > DONE_MAX or next(iter(self._handed.values())) < now - HANDED_FOR
        ):
            self._handed.popitem(last=False)  # taken by another worker, or long run

    def running(self, key: Key) -> None:
        """A redelivery of `key` found it running in another child."""
        self._ran[key] = None

    def died(self, key: Key) -> None:
        """The child running `key` died: its end is recorded as lost, not as ended."""
        self._ran.pop(key, None)

    def verdict(self, key: Key, *, given_up: bool, ask: Callable[[], Call]) -> str:
        """The verdict on a redelivery no child runs now: done, reject, run or wait.
        `ask` sends the other children the question, once."""
        task_id, _ = key
        if key in self._done or (task_id, -1) in self._done:
            return "done"
        if self._ran.pop(key, 0) is None:
            # It ran elsewhere while this redelivery waited, and has ended: whatever
            # became of that run's ack (its connection is why the broker redelivered).
            return "done"
        if given_up:
            return "reject"
        handed = self._handed.pop(key, None)
        if handed is not None and handed > time.monotonic() - HANDED_FOR:
            return "run"
        return self._asked_verdict(key, ask)

    def _asked_verdict(self, key: Key, ask: Callable[[], Call]) -> str:
        now = time.monotonic()
        for stale in [k for k, (deadline, _) in self._asked.items() if deadline < now - ASKED_FOR]:
            self._forget(stale)  # its child never asked again
        asked = self._asked.get(key)
        if asked is None:
            call = ask()
            if not call.reached:
                self._end(call)
                return "run"
            self._asked[key] = (now + CALL_TIMEOUT, call)
            return "wait"
        deadline, call = asked
        if any(call.replies):
            self._forget(key)
            self.ended(*key)
            return "done"
        if call.complete or now > deadline:
            self._forget(key)
            return "run"
        return "wait"

    def _forget(self, key: Key) -> None:
        _, call = self._asked.pop(key)
        self._end(call)
