"""Calls from the prefork parent to its children (the children's intake): a numbered
request down each child's pipe; the parent's supervisor reads the replies and puts
them in their call's box. Used under the pool's lock, which `wait` lets go meanwhile.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any


@dataclass(eq=False)
class Call:
    seq: int
    reached: int  # the children the request went to
    replies: list[Any] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.replies) >= self.reached


class Calls:
    def __init__(self, lock: threading.RLock) -> None:
        self._numbers = itertools.count(1)
        self._open: dict[int, Call] = {}
        self._replied = threading.Condition(lock)

    def start(self, conns: Iterable[Connection], name: str, *args: Any) -> Call:
        """Send the request `name(*args)` down each of `conns` (a closed one is skipped)."""
        seq = next(self._numbers)
        reached = 0
        for conn in conns:
            try:
                conn.send(("call", seq, name, args))
            except OSError:
                continue
            reached += 1
        call = self._open[seq] = Call(seq, reached)
        return call

    def wait(self, call: Call, timeout: float) -> list[Any]:
        """The replies to `call` once every child reached answered, or `timeout` passed."""
        self._replied.wait_for(lambda: call.complete, timeout)
        self.end(call)
        return list(call.replies)

    def reply(self, seq: int, value: Any) -> None:
        """A child's reply (by the supervisor); one to a call that ended is dropped."""
        call = self._open.get(seq)
        if call is not None:
            call.replies.append(value)
            self._replied.notify_all()

    def end(self, call: Call) -> None:
        """No more replies to `call` are wanted."""
        self._open.pop(call.seq, None)
