"""What the blueprint tests share: a `Journal` that steps write what happened to them
into, the `Recorded` step that does, and chains and diamonds of such steps."""

from __future__ import annotations

import threading
from typing import ClassVar, NamedTuple

from bootkit import (
    BlueprintEvent,
    Context,
    State,
    Step,
    StopReason,
)
from bootkit.testing import EventLog

WAIT = 5.0  # seconds any wait may take before the test counts as failed


class Entry(NamedTuple):
    step: str
    what: str  # "start", "ready", "stop" or "stopped"
    reason: StopReason | None = None


class Journal:
    """What the steps of one test did, in order; shared by all their instances."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._lock = threading.Lock()

    def add(self, step: str, what: str, reason: StopReason | None = None) -> None:
        with self._lock:
            self.entries.append(Entry(step, what, reason))

    def steps(self, what: str) -> list[str]:
        with self._lock:
            return [e.step for e in self.entries if e.what == what]

    def stops(self) -> list[tuple[str, StopReason | None]]:
        with self._lock:
            return [(e.step, e.reason) for e in self.entries if e.what == "stop"]

    def index(self, step: str, what: str) -> int:
        with self._lock:
            return self.entries.index(Entry(step, what, None))


class Recorded(Step):
    """A step that journals its start and stop; `raises` makes its start fail."""

    journal: ClassVar[Journal]
    raises: ClassVar[BaseException | None] = None

    def start(self, ctx: Context) -> None:
        self.journal.add(self.name, "start")
        if self.raises is not None:
            raise self.raises
        self.journal.add(self.name, "ready")

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.journal.add(self.name, "stop", reason)


def recorded(
    step: str,
    journal: Journal,
    *,
    needs: tuple[str, ...] = (),
    error: BaseException | None = None,
) -> type[Recorded]:
    """A `Recorded` step named `step` (its blueprint is the name's first part)."""
    shared = journal

    class Made(Recorded):
        name = step
        blueprint = step.partition(".")[0]
        requires = needs
        journal = shared
        raises = error

    return Made


def chain(journal: Journal, n: int, *, fail_at: int | None = None) -> list[type[Recorded]]:
    """Steps app.s1 .. app.sN, each requiring the one before; step `fail_at` raises."""
    return [
        recorded(
            f"app.s{i}",
            journal,
            needs=(f"app.s{i - 1}",) if i > 1 else (),
            error=RuntimeError(f"step {i} broke") if i == fail_at else None,
        )
        for i in range(1, n + 1)
    ]


def diamond(journal: Journal) -> list[type[Recorded]]:
    """app.a; app.b and app.c require it; app.d requires both: waves a | b c | d."""
    return [
        recorded("app.a", journal),
        recorded("app.b", journal, needs=("app.a",)),
        recorded("app.c", journal, needs=("app.a",)),
        recorded("app.d", journal, needs=("app.b", "app.c")),
    ]


def blueprint_states(log: EventLog, name: str = "app") -> list[tuple[State, State]]:
    return [
        (e.previous, e.state)
        for e in log.events
        if isinstance(e, BlueprintEvent) and e.blueprint == name
    ]
