"""The consumer loop's inbox and its turn.

Callbacks posted from any thread run in the loop's, between two waits. A post writes
a byte to a wake-up pipe only while the loop is waiting; a loop that is running looks
at its inbox before it waits again (it says it waits first, then looks), so no post
is missed and a busy loop costs its posters no system call.

The turn is the right to do the loop's work: the loop holds it from `hold` to
`let_go`, except while it waits or `lends` it (runs a task inline), when another
thread may `take_turn` and do that work itself instead of posting it and waking the
loop.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any

Callback = Callable[[], None]


class Inbox:
    """Callbacks for one loop thread, and that thread's one wait."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callback] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._closed = False
        self._waiting = False  # the loop is (about to be) blocked: a post must wake it
        self._turn = threading.Lock()
        self._held = False  # between hold and let_go: the loop gives the turn up to wait

    def post(self, callback: Callback) -> bool:
        """Have the loop run `callback` soon; any thread. False once refused or closed:
        nothing will run it."""
        with self._lock:
            if self._closed:
                return False
            self._queue.put(callback)
            if self._waiting:
                with contextlib.suppress(BlockingIOError):  # a full pipe: it is awake
                    os.write(self._wake_w, b"x")
        return True

    def hold(self) -> None:
        """The loop begins: it holds the turn from now on, except while it waits."""
        self._turn.acquire()
        self._held = True

    def let_go(self) -> None:
        """The loop ends (with the turn held): no thread gets the turn any more."""
        self._held = False
        self._turn.release()

    def take_turn(self) -> bool:
        """Take the turn, without waiting, if the loop is waiting; `give_turn` after."""
        if not self._turn.acquire(blocking=False):
            return False
        if not self._held:  # the loop has not begun, or has ended
            self._turn.release()
            return False
        return True

    def give_turn(self) -> None:
        self._turn.release()

    def lend(self) -> bool:
        """The loop, holding the turn, is about to do something that is not the loop's
        work (run a task inline): other threads may `take_turn` until `take_back`, to
        which it passes what this returns."""
        held = self._held
        if held:
            self._turn.release()
        return held

    def take_back(self, lent: bool) -> None:
        """Take the turn back after `lend`, waiting for a thread that has it to give it
        back."""
        if lent:
            self._turn.acquire()

    def empty(self) -> bool:
        return self._queue.empty()

    def run(self) -> None:
        """Run what was posted, in order, including what those callbacks post (loop)."""
        get = self._queue.get_nowait
        while True:
            try:
                callback = get()
            except queue.Empty:
                return
            callback()

    def wait(self, fds: Sequence[Any], timeout: float) -> tuple[list[Any], bool]:
        """Wait until one of `fds` is readable, a callback is posted, or `timeout`
        seconds pass (loop; the turn is free meanwhile). The readable ones among `fds`,
        and whether the wait was idle: it timed out with nothing readable and nothing
        posted."""
        self._waiting = True
        if not self._queue.empty():
            timeout = 0
        held = self._held
        if held:
            self._turn.release()
        try:
            readable, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
        finally:
            self._waiting = False
            if held:
                self._turn.acquire()
        if self._wake_r in readable:
            # One read: wake-ups left over make the next wait return at once, harmlessly.
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            readable.remove(self._wake_r)
            return readable, False
        return readable, not readable and self._queue.empty()

    def refuse(self) -> list[Callback]:
        """Take no more posts; the callbacks posted and not run, in order."""
        with self._lock:
            self._closed = True
        left: list[Callback] = []
        while True:
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                return left

    def close(self) -> None:
        """Refuse posts and release the pipe (no post can write to a reused fd)."""
        with self._lock:
            self._closed = True
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
