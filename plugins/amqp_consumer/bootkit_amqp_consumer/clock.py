"""The Lamport clock every event, control request and mingle reply carries."""

from __future__ import annotations

import threading


class LamportClock:
    """A logical clock: `forward` before sending, `adjust` on receiving; thread-safe."""

    def __init__(self, value: int = 0) -> None:
        self._value = value
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def forward(self) -> int:
        """Tick for an event about to be sent; the new value."""
        with self._lock:
            self._value += 1
            return self._value

    def adjust(self, other: object) -> int:
        """Move past a received timestamp; a missing or malformed one only ticks."""
        seen = other if isinstance(other, int) and not isinstance(other, bool) else 0
        with self._lock:
            self._value = max(self._value, seen) + 1
            return self._value
