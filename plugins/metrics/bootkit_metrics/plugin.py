"""The plugin's hooks: the ``metrics.http`` step, its options, and a lifecycle observer
that keeps every step's state and timings for the endpoint."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bootkit import Option, Step, StepEvent, Transition, hookimpl

_STATES = {
    Transition.STARTING: "starting",
    Transition.STARTED: "running",
    Transition.START_FAILED: "failed",
    Transition.START_TIMEOUT: "failed",
    Transition.STOPPING: "stopping",
    Transition.STOPPED: "stopped",
    Transition.STOP_FAILED: "failed",
    Transition.STOP_TIMEOUT: "failed",
}


@dataclass
class StepBook:
    """Each step's last state, and the seconds its last start and stop took."""

    states: dict[tuple[str, str], str] = field(default_factory=dict)
    seconds: dict[tuple[str, str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: StepEvent) -> None:
        key = (event.blueprint, event.step)
        with self.lock:
            self.states[key] = _STATES[event.transition]
            if event.seconds is not None and event.transition is Transition.STARTED:
                self.seconds[(*key, "start")] = event.seconds
            elif event.seconds is not None and event.transition is Transition.STOPPED:
                self.seconds[(*key, "stop")] = event.seconds


BOOK = StepBook()  # one per process: the kernel's events reach this module's hook


@hookimpl
def bootkit_step_event(event: StepEvent) -> None:
    BOOK.record(event)


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_metrics.steps import MetricsHTTP

    return [MetricsHTTP]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option(
            "metrics_port",
            "Serve Prometheus metrics on this port (off when unset).",
            type=int,
            metavar="PORT",
        ),
        Option(
            "metrics_host",
            "Address the metrics endpoint binds.",
            default="127.0.0.1",
            metavar="HOST",
        ),
    ]
