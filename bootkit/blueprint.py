"""Blueprint: runs the steps of one blueprint of a plan, by waves, with rollback.

Start: each wave's steps start together, each in its own thread, bounded by its
`start_timeout` (one at a time with ``serial_start``). When a step raises or times
out, the wave is let finish, then every step already started, and the one that
timed out, is stopped in reverse order, and one `StartError` reports it all.

Stop: in reverse order, by reverse waves; a stop that raises or passes its
`stop_timeout` is logged and the others still stop; `StopError` sums them up.
A step whose start or stop timed out keeps its thread (Python cannot kill it); the
thread is a daemon and does not hold the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bootkit.config import Settings
from bootkit.context import Context
from bootkit.errors import BootkitError, StartError, StepTimeoutError, StopError
from bootkit.events import (
    BlueprintEvent,
    ChildRestart,
    NullObserver,
    Observer,
    State,
    StepEvent,
    Transition,
)
from bootkit.log import logger
from bootkit.plan import Plan, PlannedStep
from bootkit.step import Step, StopReason


@dataclass(frozen=True)
class Fault:
    """A running step reported that it broke."""

    blueprint: str
    step: str | None
    error: BaseException


class _Call:
    """Runs `fn` in a daemon thread at once; `wait` bounds how long we wait for it."""

    def __init__(self, fn: Callable[[], None], timeout: float | None, name: str) -> None:
        self.timeout = timeout
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._done = threading.Event()
        self._began = time.monotonic()
        self._fn = fn
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # reported to the caller, never swallowed
            self.error = exc
        finally:
            self.seconds = time.monotonic() - self._began
            self._done.set()

    def wait(self) -> bool:
        """Wait until done or timed out; False when it timed out."""
        if self.timeout is None:
            self._done.wait()
        elif not self._done.wait(max(0.0, self._began + self.timeout - time.monotonic())):
            self.seconds = time.monotonic() - self._began
            return False
        return True


class Blueprint:
    """The running form of one blueprint of a `Plan`."""

    def __init__(
        self,
        plan: Plan,
        name: str,
        settings: Settings,
        *,
        observer: Observer | None = None,
        parent: Context | None = None,
        on_fault: Callable[[Fault], None] | None = None,
        hook: Any = None,
    ) -> None:
        self.plan = plan
        self.name = name
        self.settings = settings
        self.observer: Observer = observer or NullObserver()
        self.state = State.CREATED
        self.fault: Fault | None = None
        self.faulted = threading.Event()
        self._on_fault = on_fault
        self._planned: dict[str, PlannedStep] = {p.name: p for p in plan.enabled(name)}
        self._waves = plan.blueprints[name].waves
        self._instances: dict[str, Step] = {}
        self._started: list[str] = []
        self._lock = threading.Lock()
        self.ctx = Context(
            settings=settings,
            plan=plan,
            blueprint=name,
            observer=self.observer,
            parent=parent,
            on_fault=self._fault,
            on_child_restart=self._child_restart,
            hook=hook,
        )

    # -- starting ---------------------------------------------------------------

    def start(self) -> None:
        """Start every step, wave by wave; return once all are ready.

        Raises:
            StartError: a step raised or timed out; the started ones were stopped.
        """
        if self.state not in (State.CREATED, State.STOPPED):
            raise BootkitError(f"blueprint {self.name!r} cannot start while {self.state.value}")
        began = time.monotonic()
        self.fault = None
        self.faulted.clear()
        self._started = []
        self._set_state(State.STARTING)
        for wave_index, wave in enumerate(self._waves):
            failures = self._start_wave(wave_index, wave)
            if failures:
                error = self._rollback(failures)
                self._set_state(State.FAILED, time.monotonic() - began, error)
                raise error
        self._set_state(State.RUNNING, time.monotonic() - began)

    def _start_wave(self, wave_index: int, wave: Sequence[str]) -> list[tuple[str, BaseException]]:
        failures: list[tuple[str, BaseException]] = []
        if self.settings.serial_start:
            for name in wave:
                failures += self._await_start(wave_index, [self._begin_start(wave_index, name)])
                if failures:
                    break
        else:
            calls = [self._begin_start(wave_index, name) for name in wave]
            failures = self._await_start(wave_index, calls)
        return failures

    def _begin_start(self, wave_index: int, name: str) -> tuple[str, _Call]:
        planned = self._planned[name]
        self._emit(StepEvent(self.name, name, Transition.STARTING, wave_index))
        logger().debug("step_starting", blueprint=self.name, step=name, wave=wave_index)

        def start() -> None:
            instance = planned.cls()
            self._instances[name] = instance
            instance.start(self.ctx)

        return name, _Call(start, planned.cls.start_timeout, f"bootkit-start-{name}")

    def _await_start(
        self, wave_index: int, calls: Sequence[tuple[str, _Call]]
    ) -> list[tuple[str, BaseException]]:
        failures: list[tuple[str, BaseException]] = []
        for name, call in calls:
            if not call.wait():
                error: BaseException = StepTimeoutError(
                    f"step {name!r} did not become ready within {call.timeout:g}s (start_timeout)"
                )
                logger().error(
                    "step_start_timeout", blueprint=self.name, step=name, seconds=call.seconds
                )
                self._emit(
                    StepEvent(
                        self.name, name, Transition.START_TIMEOUT, wave_index, call.seconds, error
                    )
                )
                self._started.append(name)  # half-started: its stop must undo it
                failures.append((name, error))
            elif call.error is not None:
                logger().error(
                    "step_start_failed",
                    blueprint=self.name,
                    step=name,
                    seconds=round(call.seconds, 6),
                    exc_info=call.error,
                )
                self._emit(
                    StepEvent(
                        self.name,
                        name,
                        Transition.START_FAILED,
                        wave_index,
                        call.seconds,
                        call.error,
                    )
                )
                failures.append((name, call.error))
            else:
                self._started.append(name)
                logger().info(
                    "step_started", blueprint=self.name, step=name, seconds=round(call.seconds, 6)
                )
                self._emit(StepEvent(self.name, name, Transition.STARTED, wave_index, call.seconds))
        return failures

    def _rollback(self, failures: list[tuple[str, BaseException]]) -> StartError:
        order = [n for n in self.plan.blueprints[self.name].order if n in self._started]
        outcome = self._stop_steps(list(reversed(order)), StopReason.ROLLBACK, serial=True)
        self._started = []
        step, cause = failures[0]
        others = ", ".join(n for n, _ in failures[1:])
        also = f" (also failed: {others})" if others else ""
        undone = "; ".join(outcome.lines) if outcome.lines else "nothing to undo"
        error = StartError(
            f"blueprint {self.name!r} failed to start: step {step!r}: "
            f"{_describe(cause)}{also}; rollback: {undone}",
            blueprint=self.name,
            step=step,
            rollback=outcome.lines,
        )
        error.__cause__ = cause
        return error

    # -- stopping ---------------------------------------------------------------

    def stop(self, reason: StopReason = StopReason.SHUTDOWN) -> None:
        """Stop every started step in reverse order.

        Raises:
            StopError: one or more steps raised or timed out; all others were stopped.
        """
        with self._lock:
            if self.state not in (State.RUNNING, State.STARTING):
                return
            began = time.monotonic()
            self._set_state(State.STOPPING)
        order = self.plan.blueprints[self.name].order
        started = set(self._started)
        names = [n for n in reversed(order) if n in started]
        outcome = self._stop_steps(names, reason, serial=self.settings.serial_start)
        self._started = []
        error = None
        if outcome.failures:
            error = StopError(
                f"blueprint {self.name!r} stopped with errors: " + "; ".join(outcome.failures),
                failures=outcome.failures,
            )
        self._set_state(State.STOPPED, time.monotonic() - began, error)
        if error is not None:
            raise error

    def _stop_steps(self, names: list[str], reason: StopReason, *, serial: bool) -> _StopOutcome:
        outcome = _StopOutcome()
        if serial:
            batches = [[n] for n in names]
        else:
            wave_of = {n: w for w, wave in enumerate(self._waves) for n in wave}
            batches = []
            for name in names:
                if batches and wave_of[batches[-1][0]] == wave_of[name]:
                    batches[-1].append(name)
                else:
                    batches.append([name])
        for batch in batches:
            calls = [self._begin_stop(name, reason) for name in batch]
            for name, call in calls:
                self._finish_stop(name, call, reason, outcome)
        return outcome

    def _begin_stop(self, name: str, reason: StopReason) -> tuple[str, _Call]:
        planned = self._planned[name]
        wave = planned.wave or 0
        self._emit(StepEvent(self.name, name, Transition.STOPPING, wave, reason=reason))
        logger().debug("step_stopping", blueprint=self.name, step=name, reason=reason.value)
        instance = self._instances.get(name)

        def stop() -> None:
            if instance is not None:
                instance.stop(self.ctx, reason)

        return name, _Call(stop, planned.cls.stop_timeout, f"bootkit-stop-{name}")

    def _finish_stop(
        self, name: str, call: _Call, reason: StopReason, outcome: _StopOutcome
    ) -> None:
        wave = self._planned[name].wave or 0
        fields = {"blueprint": self.name, "step": name, "reason": reason.value}
        if not call.wait():
            error: BaseException = StepTimeoutError(
                f"step {name!r} did not stop within {call.timeout:g}s (stop_timeout)"
            )
            logger().error("step_stop_timeout", seconds=round(call.seconds, 6), **fields)
            self._emit(
                StepEvent(
                    self.name, name, Transition.STOP_TIMEOUT, wave, call.seconds, error, reason
                )
            )
            outcome.add(name, f"stop timed out after {call.timeout:g}s", failed=True)
        elif call.error is not None:
            logger().error(
                "step_stop_failed", seconds=round(call.seconds, 6), exc_info=call.error, **fields
            )
            self._emit(
                StepEvent(
                    self.name, name, Transition.STOP_FAILED, wave, call.seconds, call.error, reason
                )
            )
            outcome.add(name, f"stop failed: {_describe(call.error)}", failed=True)
        else:
            logger().info("step_stopped", seconds=round(call.seconds, 6), **fields)
            self._emit(
                StepEvent(self.name, name, Transition.STOPPED, wave, call.seconds, None, reason)
            )
            outcome.add(name, "stopped", failed=False)

    # -- while running ------------------------------------------------------------

    def _fault(self, step: str | None, error: BaseException) -> None:
        if self.state not in (State.RUNNING, State.STARTING):
            logger().debug(
                "step_fault_ignored", blueprint=self.name, step=step, state=self.state.value
            )
            return
        logger().error("step_fault", blueprint=self.name, step=step, exc_info=error)
        fault = Fault(self.name, step, error)
        if self._on_fault is not None:
            self._on_fault(fault)
            return
        if self.fault is None:
            self.fault = fault
        self.faulted.set()

    def _child_restart(self, event: ChildRestart, done: bool) -> None:
        for name in list(self._started):
            instance = self._instances.get(name)
            if instance is None:
                continue
            hook = instance.on_child_restarted if done else instance.on_child_restarting
            try:
                hook(self.ctx, event)
            except Exception:
                logger().exception("child_restart_hook_failed", blueprint=self.name, step=name)

    def _set_state(
        self, state: State, seconds: float | None = None, error: BaseException | None = None
    ) -> None:
        previous, self.state = self.state, state
        fields = {} if seconds is None else {"seconds": round(seconds, 6)}
        logger().info(
            "blueprint_state",
            blueprint=self.name,
            state=state.value,
            previous=previous.value,
            **fields,
        )
        self.observer.blueprint_event(BlueprintEvent(self.name, state, previous, seconds, error))

    def _emit(self, event: StepEvent) -> None:
        try:
            self.observer.step_event(event)
        except Exception:
            logger().exception("observer_failed", blueprint=self.name, step=event.step)


class _StopOutcome:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failures: list[str] = []

    def add(self, name: str, what: str, *, failed: bool) -> None:
        self.lines.append(f"{name} {what}")
        if failed:
            self.failures.append(f"{name} {what}")


def _describe(error: BaseException) -> str:
    if isinstance(error, StepTimeoutError):
        return str(error)
    return f"{type(error).__name__}: {error}"
