"""BlueprintStep: a step that runs a child blueprint and restarts it on declared faults.

Restart policy: a fault (reported with ``ctx.fail``) or a failed start whose cause is
an instance of `restart_on` restarts the child: every running step of the child is
stopped with `StopReason.RESTART`, the supervisor waits `backoff(n)` seconds, then
starts fresh step instances. `max_restarts` restarts are allowed within any
`restart_window` seconds; one more, or any other fault, is passed up to the
enclosing blueprint. The running steps of the enclosing blueprint are told through
`Step.on_child_restarting` / `on_child_restarted`.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import ClassVar

from bootkit.blueprint import Blueprint, Fault
from bootkit.context import Context
from bootkit.errors import BootkitError, StartError, StopError
from bootkit.events import ChildRestart
from bootkit.log import logger
from bootkit.step import Step, StopReason


class RestartBudgetError(BootkitError):
    """A child blueprint needed more restarts than its budget allows."""


class BlueprintStep(Step):
    """Runs the blueprint named by `hosts` as a child and supervises it.

    Attributes:
        restart_on: fault classes that restart the child; others go up at once.
        max_restarts: restarts allowed within `restart_window` seconds.
        backoff_initial, backoff_factor, backoff_max: the delay before restart n
            (0-based within the window) is min(initial * factor**n, max).
    """

    hosts: ClassVar[str | None]
    restart_on: ClassVar[tuple[type[BaseException], ...]] = ()
    max_restarts: ClassVar[int] = 5
    restart_window: ClassVar[float] = 60.0
    backoff_initial: ClassVar[float] = 0.1
    backoff_factor: ClassVar[float] = 2.0
    backoff_max: ClassVar[float] = 5.0
    start_timeout: ClassVar[float | None] = None

    def __init__(self) -> None:
        self.child: Blueprint | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self._faults: collections.deque[Fault] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._supervisor: threading.Thread | None = None

    @classmethod
    def backoff(cls, attempt: int) -> float:
        """Seconds to wait before restart number `attempt` (0-based) of the window."""
        return float(min(cls.backoff_initial * cls.backoff_factor**attempt, cls.backoff_max))

    def start(self, ctx: Context) -> None:
        assert self.hosts is not None, f"{self.name}: BlueprintStep needs hosts = 'child'"
        self._ctx = ctx
        attempt_error: BaseException | None = None
        while True:
            try:
                self._boot_child(ctx)
                break
            except StartError as exc:
                cause = exc.__cause__ or exc
                if not isinstance(cause, self.restart_on):
                    raise
                attempt_error = exc
            delay = self._take_budget(attempt_error)
            logger().warning(
                "child_start_retry",
                blueprint=ctx.blueprint,
                child=self.hosts,
                delay=delay,
                error=str(attempt_error),
            )
            if self._sleep(delay):
                raise attempt_error
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"bootkit-supervise-{self.hosts}", daemon=True
        )
        self._supervisor.start()

    def stop(self, ctx: Context, reason: StopReason) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        if self.child is not None:
            self.child.stop(reason)

    def _boot_child(self, ctx: Context) -> None:
        assert self.hosts is not None
        self.child = Blueprint(
            ctx.plan,
            self.hosts,
            ctx.settings,
            observer=ctx.observer,
            parent=ctx,
            on_fault=self._on_child_fault,
            hook=ctx.hook,
        )
        self.child.start()

    def _on_child_fault(self, fault: Fault) -> None:
        with self._wake:
            self._faults.append(fault)
            self._wake.notify_all()

    def _take_budget(self, cause: BaseException) -> float:
        """Count one restart; raise when the window's budget is spent."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.restart_window:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            raise RestartBudgetError(
                f"child blueprint {self.hosts!r} of step {self.name!r} needed more than "
                f"{self.max_restarts} restarts within {self.restart_window:g}s; last cause: "
                f"{type(cause).__name__}: {cause}"
            ) from cause
        delay = self.backoff(len(self.restarts))
        self.restarts.append(now)
        return delay

    def _sleep(self, delay: float) -> bool:
        """Wait `delay` seconds unless stopped first; True when stopped."""
        deadline = time.monotonic() + delay
        with self._wake:
            while not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            return self._stopping

    def _supervise(self) -> None:
        while True:
            with self._wake:
                while not self._faults and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                fault = self._faults.popleft()
                self._faults.clear()
            try:
                self._restart(fault)
            except BaseException as exc:
                if not self._stopping:
                    self._ctx.fail(exc, step=self.name)
                return

    def _restart(self, fault: Fault) -> None:
        if not isinstance(fault.error, self.restart_on):
            raise fault.error
        cause: BaseException = fault.error
        while not self._stopping:
            delay = self._take_budget(cause)
            event = ChildRestart(self.hosts or "", self.name, len(self.restarts), delay, cause)
            logger().warning(
                "child_restarting",
                blueprint=self._ctx.blueprint,
                child=event.blueprint,
                attempt=event.attempt,
                delay=delay,
                cause=f"{type(cause).__name__}: {cause}",
            )
            self._ctx.observer.child_restart(event)
            self._ctx.child_restart(event, done=False)
            if self.child is not None:
                # Each failed stop was logged; a fresh child is built below.
                with contextlib.suppress(StopError):
                    self.child.stop(StopReason.RESTART)
            with self._wake:
                # More reports from the child just stopped are about the fault handled here.
                self._faults.clear()
            if self._sleep(delay):
                return
            try:
                self._boot_child(self._ctx)
            except StartError as exc:
                if not isinstance(exc.__cause__, self.restart_on):
                    raise
                cause = exc.__cause__
                continue
            logger().info("child_restarted", blueprint=self._ctx.blueprint, child=event.blueprint)
            self._ctx.child_restart(event, done=True)
            return
