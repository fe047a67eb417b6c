"""Task rate limits: Celery's spelling ("10/s", "100/m", "1000/h") and token buckets."""

from __future__ import annotations

import time

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: object) -> float | None:
    """Tasks per second, or None for no limit (None, 0, "" and "0" mean none).

    Raises: ValueError on anything else that does not parse.
    """
    if rate is None or rate == "" or rate == 0:
        return None
    if isinstance(rate, bool):
        raise ValueError(f"not a rate limit: {rate!r}")
    if isinstance(rate, int | float):
        per_second = float(rate)
    elif isinstance(rate, str):
        count, _, unit = rate.strip().partition("/")
        if unit and unit not in _PER:
            raise ValueError(f"not a rate limit: {rate!r} (use N/s, N/m or N/h)")
        try:
            per_second = float(count) / _PER[unit or "s"]
        except ValueError:
            raise ValueError(f"not a rate limit: {rate!r} (use N/s, N/m or N/h)") from None
    else:
        raise ValueError(f"not a rate limit: {rate!r}")
    if per_second < 0:
        raise ValueError(f"a rate limit cannot be negative: {rate!r}")
    return per_second or None


class TokenBucket:
    """`rate` tokens a second, holding at most `capacity`; starts full."""

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at = time.monotonic()

    def take(self, now: float | None = None) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimits:
    """The rate in force for each task, and a token bucket per rate-limited task.

    The rate in force is one set at run time (`overrides`: the ``rate_limit`` control
    command's, by task name) before the task's own, times `share`: the part of it this
    consumer applies (1/N in each of N children consuming for themselves, so the worker
    as a whole keeps the rate). A bucket is made anew when its rate changes.
    """

    def __init__(self, overrides: dict[str, float | None]) -> None:
        self.overrides = overrides
        self.share = 1.0
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, name: str, declared: object) -> float:
        """Seconds until a task `name`, declaring `declared` (its ``rate_limit``), may
        start; 0.0 when it may start now, which takes its token."""
        rate = self.overrides[name] if name in self.overrides else parse_rate(declared)
        if rate is None:
            return 0.0
        rate *= self.share
        bucket = self._buckets.get(name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[name] = TokenBucket(rate)
        return bucket.take()
