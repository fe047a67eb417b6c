"""Lifecycle vocabulary: states, transitions, and the events observers receive."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from bootkit.step import StopReason


class State(enum.Enum):
    """Blueprint states: created -> starting -> running -> stopping -> stopped, or failed."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Transition(enum.Enum):
    STARTING = "starting"
    STARTED = "started"
    START_FAILED = "start_failed"
    START_TIMEOUT = "start_timeout"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STOP_FAILED = "stop_failed"
    STOP_TIMEOUT = "stop_timeout"


@dataclass(frozen=True)
class StepEvent:
    """A step changed state; `seconds` is how long the start or stop took."""

    blueprint: str
    step: str
    transition: Transition
    wave: int
    seconds: float | None = None
    error: BaseException | None = None
    reason: StopReason | None = None


@dataclass(frozen=True)
class BlueprintEvent:
    """A blueprint changed state; `seconds` is how long the phase that ended took."""

    blueprint: str
    state: State
    previous: State
    seconds: float | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class ChildRestart:
    """A child blueprint is restarting after `cause`, on attempt `attempt` of the budget."""

    blueprint: str
    host: str
    attempt: int
    delay: float
    cause: BaseException


class Observer(Protocol):
    """Receives every lifecycle event, from whichever thread caused it."""

    def step_event(self, event: StepEvent) -> None: ...

    def blueprint_event(self, event: BlueprintEvent) -> None: ...

    def child_restart(self, event: ChildRestart) -> None: ...


class NullObserver:
    """An observer that ignores everything."""

    def step_event(self, event: StepEvent) -> None:
        pass

    def blueprint_event(self, event: BlueprintEvent) -> None:
        pass

    def child_restart(self, event: ChildRestart) -> None:
        pass


class Fanout:
    """Passes each event to several observers in turn."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def step_event(self, event: StepEvent) -> None:
        for observer in self.observers:
            observer.step_event(event)

    def blueprint_event(self, event: BlueprintEvent) -> None:
        for observer in self.observers:
            observer.blueprint_event(event)

    def child_restart(self, event: ChildRestart) -> None:
        for observer in self.observers:
            observer.child_restart(event)
