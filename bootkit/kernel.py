"""Kernel: starts the top-level blueprints of a plan, waits, and stops them.

Top-level blueprints (those no step hosts) start one after another in name order
and stop in reverse. A fault that reaches a top-level blueprint stops everything.
"""

from __future__ import annotations

import threading
from typing import Any

from bootkit.blueprint import Blueprint, Fault
from bootkit.config import Settings
from bootkit.errors import StartError, StopError
from bootkit.events import Fanout, Observer
from bootkit.log import logger
from bootkit.plan import Plan
from bootkit.record import Recorder
from bootkit.step import StopReason

EXIT_OK = 0
EXIT_FAILURE = 1  # a start, a stop or a running step failed
EXIT_USAGE = 2  # bad command line, configuration, plugin or graph
EXIT_COLD = 3  # a second signal cut the shutdown short


class Kernel:
    """Runs a resolved plan."""

    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        observer: Observer | None = None,
        *,
        hook: Any = None,
    ) -> None:
        """`hook`: the plugins' hook relay (``Plugins.manager.hook``), reached by steps
        as ``ctx.hook``."""
        self.plan = plan
        self.settings = settings
        self.recorder = Recorder(plan, settings.state_dir)
        self.observer: Observer = Fanout(self.recorder, observer) if observer else self.recorder
        self.fault: Fault | None = None
        self._wakeup = threading.Event()
        self.blueprints = [
            Blueprint(
                plan, name, settings, observer=self.observer, on_fault=self._on_fault, hook=hook
            )
            for name in plan.top_level
        ]
        self._started: list[Blueprint] = []

    def start(self) -> None:
        """Start every top-level blueprint; on failure stop those started and raise.

        Raises:
            StartError: from the blueprint that failed, after everything was undone.
        """
        self.recorder.begin()
        logger().info("kernel_starting", blueprints=[b.name for b in self.blueprints])
        for blueprint in self.blueprints:
            try:
                blueprint.start()
            except StartError:
                self._stop_started(StopReason.ROLLBACK)
                self.recorder.end("boot", ok=False)
                raise
            self._started.append(blueprint)
        self.recorder.end("boot", ok=True)
        logger().info("kernel_ready", blueprints=[b.name for b in self.blueprints])

    def request_stop(self) -> None:
        """Ask `wait` to return; safe from any thread (not from a signal handler: it locks)."""
        self._wakeup.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested or a fault arrives; False on timeout."""
        return self._wakeup.wait(timeout)

    def stop(self) -> list[str]:
        """Stop the started blueprints in reverse; return the failures (empty when clean)."""
        self.recorder.begin()
        failures = self._stop_started(StopReason.SHUTDOWN)
        self.recorder.end("shutdown", ok=not failures)
        logger().info("kernel_stopped", failures=len(failures))
        return failures

    def run(self) -> int:
        """Start, wait for `request_stop` or a fault, stop; return the exit status."""
        try:
            self.start()
        except StartError as exc:
            logger().error("kernel_start_failed", error=str(exc))
            raise
        self.wait()
        failures = self.stop()
        if self.fault is not None or failures:
            return EXIT_FAILURE
        return EXIT_OK

    def _stop_started(self, reason: StopReason) -> list[str]:
        failures: list[str] = []
        while self._started:
            blueprint = self._started.pop()
            try:
                blueprint.stop(reason)
            except StopError as exc:
                failures.extend(exc.failures)
        return failures

    def _on_fault(self, fault: Fault) -> None:
        if self.fault is None:
            self.fault = fault
        logger().error(
            "kernel_fault",
            blueprint=fault.blueprint,
            step=fault.step,
            error=f"{type(fault.error).__name__}: {fault.error}",
        )
        self._wakeup.set()
