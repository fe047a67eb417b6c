"""Timer: runs callbacks at a time or every interval, from one thread, without polling.

The worker holds ETA/countdown tasks here so consumption never blocks on them, and
other steps (heartbeats, sweeps) schedule their periodic work here.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from bootkit import logger


class Entry:
    """A scheduled call; `cancel` stops it (and its repeats)."""

    def __init__(self, fn: Callable[[], object], interval: float | None) -> None:
        self.fn = fn
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timer:
    """A heap of entries served by one daemon thread."""

    def __init__(self, name: str = "bootkit-timer") -> None:
        self.name = name
        self._heap: list[tuple[float, int, Entry]] = []
        self._counter = itertools.count()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def call_at(self, when: float, fn: Callable[[], object]) -> Entry:
        """Call `fn` at `when` (a `time.monotonic()` value)."""
        return self._push(when, Entry(fn, None))

    def call_later(self, delay: float, fn: Callable[[], object]) -> Entry:
        return self._push(time.monotonic() + max(0.0, delay), Entry(fn, None))

    def call_repeatedly(self, interval: float, fn: Callable[[], object]) -> Entry:
        """Call `fn` every `interval` seconds, the first time one interval from now."""
        return self._push(time.monotonic() + interval, Entry(fn, interval))

    def __len__(self) -> int:
        with self._changed:
            return sum(1 for _, _, e in self._heap if not e.cancelled)

    def _push(self, when: float, entry: Entry) -> Entry:
        with self._changed:
            heapq.heappush(self._heap, (when, next(self._counter), entry))
            self._changed.notify_all()
        return entry

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopping:
                    if self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                        continue
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    if wait is not None and wait <= 0:
                        break
                    self._changed.wait(wait)
                if self._stopping:
                    return
                when, _, entry = heapq.heappop(self._heap)
                if entry.interval is not None:
                    heapq.heappush(self._heap, (when + entry.interval, next(self._counter), entry))
            try:
                entry.fn()
            except Exception:
                logger().exception("timer_callback_failed", timer=self.name)
