"""When periodic tasks are due: fixed intervals and crontab expressions, in UTC.

Crontab fields, as in cron(5): minute (0-59), hour (0-23), day of month (1-31), month
(1-12 or jan-dec), day of week (0-6 or sun-sat, 7 is Sunday too). Each field takes
``*``, ``N``, ``A-B``, ``*/S`` or ``A-B/S``, and comma-separated lists of those. When
both day of month and day of week are restricted, a day matching either is due (as
cron does); when one is ``*``, the other decides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScheduleError(ValueError):
    """A schedule that does not parse; the message says what and where."""


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment` (aware, UTC)."""
        ...


@dataclass(frozen=True)
class Every:
    """Every `seconds` seconds, counted from the last run."""

    seconds: float

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True)
class Crontab:
    """A cron(5) expression of five fields."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *
    text: str

    @classmethod
    def parse(cls, text: str) -> Crontab:
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(
                f"cron {text!r}: expected 5 fields (m h dom mon dow), got {len(fields)}"
            )
        minute, hour, day, month, weekday = fields
        weekdays = frozenset(d % 7 for d in _field(weekday, 0, 7, _DAYS, "day of week"))
        return cls(
            minutes=_field(minute, 0, 59, {}, "minute"),
            hours=_field(hour, 0, 23, {}, "hour"),
            days=_field(day, 1, 31, {}, "day of month"),
            months=_field(month, 1, 12, _MONTHS, "month"),
            weekdays=weekdays,
            any_day=day == "*",
            any_weekday=weekday == "*",
            text=text,
        )

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, moment: datetime) -> datetime:
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * 5):  # every valid expression matches within five years
            if self.day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        due = day.replace(hour=hour, minute=minute)
                        if due >= start:
                            return due
            day += timedelta(days=1)
        raise ScheduleError(f"cron {self.text!r} never matches a real date")

    def __str__(self) -> str:
        return f"cron {self.text}"


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        match = re.fullmatch(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?", part)
        if match is None:
            raise ScheduleError(f"cron {what}: cannot read {part!r}")
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            first, last = low, high
        else:
            ends = [_number(x, names, what) for x in span.split("-")]
            first, last = ends[0], ends[-1]
            if match.group(2) and len(ends) == 1:
                last = high  # N/S: from N to the end, as cron reads it
        if not (low <= first <= last <= high) or step < 1:
            raise ScheduleError(f"cron {what}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, names: dict[str, int], what: str) -> int:
    if text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        raise ScheduleError(f"cron {what}: {text!r} is not a number or a name") from None


def crontab(
    minute: str = "*",
    hour: str = "*",
    day_of_month: str = "*",
    month_of_year: str = "*",
    day_of_week: str = "*",
) -> Crontab:
    """A crontab schedule by field, as in ``crontab(minute="0", hour="7")``."""
    return Crontab.parse(f"{minute} {hour} {day_of_month} {month_of_year} {day_of_week}")


def schedule_of(spec: Any) -> Schedule:
    """An interval (seconds, or "30s", "5m", "1h", "1d"), a cron string, or a schedule."""
    if isinstance(spec, Every | Crontab):
        return spec
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        if spec <= 0:
            raise ScheduleError(f"an interval must be above 0, got {spec}")
        return Every(float(spec))
    if isinstance(spec, str):
        text = spec.strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
        if match:
            return schedule_of(float(match.group(1)) * _UNITS[match.group(2) or "s"])
        return Crontab.parse(text)
    raise ScheduleError(f"not a schedule: {spec!r}")


@dataclass(frozen=True)
class Entry:
    """A periodic task: a unique name, when, what to send."""

    name: str
    schedule: Schedule
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


def parse_entry(line: str) -> Entry:
    """``NAME every INTERVAL TASK [ARGS_JSON]`` or ``NAME cron M H DOM MON DOW TASK [ARGS_JSON]``.

    Raises: ScheduleError naming the line.
    """
    parts = line.split(None, 2)
    if len(parts) < 3 or parts[1] not in ("every", "cron"):
        raise ScheduleError(f"beat schedule {line!r}: expected NAME every|cron ... TASK [ARGS]")
    name, kind, rest = parts
    words = rest.split(None, 6 if kind == "cron" else 2)
    width = 5 if kind == "cron" else 1
    if len(words) < width + 1:
        raise ScheduleError(f"beat schedule {line!r}: missing the task name")
    when, task = " ".join(words[:width]), words[width]
    args: Any = []
    if len(words) > width + 1:
        try:
            args = json.loads(words[width + 1])
        except ValueError as exc:
            raise ScheduleError(f"beat schedule {line!r}: arguments are not JSON: {exc}") from None
        if not isinstance(args, list):
            raise ScheduleError(f"beat schedule {line!r}: arguments must be a JSON list")
    try:
        schedule = schedule_of(when) if kind == "every" else Crontab.parse(when)
    except ScheduleError as exc:
        raise ScheduleError(f"beat schedule {line!r}: {exc}") from None
    return Entry(name, schedule, task, tuple(args))
