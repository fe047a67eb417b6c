"""BlueprintStep: a child blueprint restarted on declared faults, with backoff and a budget.

The enclosing blueprint ``app`` runs ``app.watcher`` and then ``app.consumer``, which
hosts the child blueprint ``child`` of one step, ``child.conn``. A `Probe` the test
owns scripts what each start of ``child.conn`` does and keeps what every step saw.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import ClassVar

import pytest

from bootkit import (
    BlueprintStep,
    ChildRestart,
    Context,
    Kernel,
    RestartBudgetError,
    Settings,
    StartError,
    State,
    Step,
    StopReason,
)
from bootkit.kernel import EXIT_FAILURE
from bootkit.record import read
from bootkit.testing import EventLog, capture_logs, plan_of, running

WAIT = 5.0  # seconds any wait may take before the test counts as failed


class Probe:
    """Scripts the child's starts and keeps what every step saw; safe across threads.

    `start_errors[n]` is raised by the n-th start of ``child.conn`` (0-based);
    `start_faults[n]` is reported through ``ctx.fail`` once the n-th start is done.
    """

    def __init__(
        self,
        *,
        start_errors: Mapping[int, BaseException] | None = None,
        start_faults: Mapping[int, BaseException] | None = None,
    ) -> None:
        self.start_errors = start_errors or {}
        self.start_faults = start_faults or {}
        self.conns: list[ChildConn] = []  # every instance, in start order
        self.started_at: list[float] = []  # time.monotonic() of each start
        self.stops: list[tuple[Step, StopReason]] = []
        self.hooks: list[tuple[str, ChildRestart]] = []
        self.on_restarting: Callable[[], None] | None = None  # run inside the first hook
        self._changed = threading.Condition()

    def started(self, conn: ChildConn) -> int:
        with self._changed:
            self.conns.append(conn)
            self.started_at.append(time.monotonic())
            self._changed.notify_all()
            return len(self.conns) - 1

    def stopped(self, step: Step, reason: StopReason) -> None:
        with self._changed:
            self.stops.append((step, reason))
            self._changed.notify_all()

    def hook(self, which: str, event: ChildRestart) -> None:
        with self._changed:
            self.hooks.append((which, event))
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, WAIT)

    def restarts_done(self) -> int:
        with self._changed:
            return sum(1 for which, _ in self.hooks if which == "restarted")

    def stop_reasons(self) -> list[tuple[str, StopReason]]:
        with self._changed:
            return [(step.name, reason) for step, reason in self.stops]


class ChildConn(Step):
    """The child's one step; does what the probe scripts for its attempt number."""

    name = "child.conn"
    blueprint = "child"
    probe: ClassVar[Probe]

    def start(self, ctx: Context) -> None:
        self.ctx = ctx
        attempt = self.probe.started(self)
        error = self.probe.start_errors.get(attempt)
        if error is not None:
            raise error
        fault = self.probe.start_faults.get(attempt)
        if fault is not None:
            ctx.fail(fault, step=self.name)

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.probe.stopped(self, reason)


class Watcher(Step):
    """A step of the enclosing blueprint that wants to hear about child restarts."""

    name = "app.watcher"
    blueprint = "app"
    probe: ClassVar[Probe]

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.probe.stopped(self, reason)

    def on_child_restarting(self, ctx: Context, event: ChildRestart) -> None:
        self.probe.hook("restarting", event)
        action, self.probe.on_restarting = self.probe.on_restarting, None
        if action is not None:
            action()

    def on_child_restarted(self, ctx: Context, event: ChildRestart) -> None:
        self.probe.hook("restarted", event)


class Consumer(BlueprintStep):
    """The host; tests subclass it to set the restart policy."""

    name = "app.consumer"
    blueprint = "app"
    hosts = "child"
    requires = ("app.watcher",)
    restart_on = (ConnectionError,)
    backoff_initial = 0.01


def steps(probe: Probe, host: type[Consumer] = Consumer) -> list[type[Step]]:
    shared = probe

    class Conn(ChildConn):
        probe = shared

    class Watching(Watcher):
        probe = shared

    return [Watching, host, Conn]


def restart_events(log: EventLog) -> list[ChildRestart]:
    return [e for e in list(log.events) if isinstance(e, ChildRestart)]


def fault_and_wait_for_restart(probe: Probe, error: BaseException) -> None:
    """Report `error` from the current child, then wait until the restart is done."""
    done = probe.restarts_done()
    probe.conns[-1].ctx.fail(error, step="child.conn")
    assert probe.wait_for(lambda: probe.restarts_done() > done)


# -- restart --------------------------------------------------------------------------


def test_restartable_fault_restarts_child_with_fresh_steps(settings: Settings) -> None:
    probe = Probe()
    with running(*steps(probe), settings=settings):
        fault_and_wait_for_restart(probe, ConnectionError("broker closed the connection"))

        first, second = probe.conns
        assert second is not first
        assert probe.stop_reasons() == [("child.conn", StopReason.RESTART)]
        assert probe.stops[0][0] is first


def test_restart_keeps_the_enclosing_blueprint_running(settings: Settings) -> None:
    probe = Probe()
    with running(*steps(probe), settings=settings) as kernel:
        fault_and_wait_for_restart(probe, ConnectionError("lost"))

        assert probe.conns[-1].ctx.parent is kernel.blueprints[0].ctx
        assert kernel.blueprints[0].state is State.RUNNING
        assert kernel.wait(timeout=0.05) is False
        assert kernel.fault is None


def test_enclosing_steps_hear_restarting_then_restarted(settings: Settings) -> None:
    probe = Probe()
    error = ConnectionError("lost")
    with running(*steps(probe), settings=settings):
        fault_and_wait_for_restart(probe, error)

    assert [which for which, _ in probe.hooks] == ["restarting", "restarted"]
    event = probe.hooks[0][1]
    assert probe.hooks[1][1] is event
    assert event.blueprint == "child"
    assert event.host == "app.consumer"
    assert event.attempt == 1
    assert event.delay == Consumer.backoff(0)
    assert event.cause is error


def test_restarting_hook_runs_before_the_child_stops(settings: Settings) -> None:
    probe = Probe()
    stops_seen: list[int] = []
    probe.on_restarting = lambda: stops_seen.append(len(probe.stop_reasons()))
    with running(*steps(probe), settings=settings):
        fault_and_wait_for_restart(probe, ConnectionError("lost"))

    assert stops_seen == [0]


def test_observer_receives_child_restart(settings: Settings) -> None:
    probe = Probe()
    log = EventLog()
    error = ConnectionError("lost")
    with running(*steps(probe), settings=settings, observer=log):
        fault_and_wait_for_restart(probe, error)

    [event] = restart_events(log)
    assert (event.blueprint, event.host, event.attempt, event.cause) == (
        "child",
        "app.consumer",
        1,
        error,
    )


def test_child_restart_is_logged(settings: Settings) -> None:
    probe = Probe()
    with capture_logs() as logs, running(*steps(probe), settings=settings):
        fault_and_wait_for_restart(probe, ConnectionError("lost"))

    [restarting] = [e for e in logs if e["event"] == "child_restarting"]
    assert restarting["blueprint"] == "app"
    assert restarting["child"] == "child"
    assert restarting["attempt"] == 1
    assert restarting["cause"] == "ConnectionError: lost"
    assert [e["child"] for e in logs if e["event"] == "child_restarted"] == ["child"]


def test_a_second_report_of_the_same_loss_restarts_once(settings: Settings) -> None:
    # Two parts of the child notice one lost connection: the second report arrives
    # while the restart is under way, before the old child is stopped.
    probe = Probe()
    log = EventLog()
    first, echo, later = (ConnectionError(x) for x in ("first", "echo", "later"))

    with running(*steps(probe), settings=settings, observer=log):
        old = probe.conns[0].ctx
        probe.on_restarting = lambda: old.fail(echo, step="child.conn")
        fault_and_wait_for_restart(probe, first)
        fault_and_wait_for_restart(probe, later)

    assert [e.cause for e in restart_events(log)] == [first, later]
    assert len(probe.conns) == 3


def test_restart_is_not_recorded_as_part_of_boot(settings: Settings) -> None:
    probe = Probe()
    with running(*steps(probe), settings=settings):
        fault_and_wait_for_restart(probe, ConnectionError("lost"))

    boot = read(settings.state_dir)["boot"]
    assert sorted(s["step"] for s in boot["steps"]) == ["app.consumer", "app.watcher", "child.conn"]
    assert {s["outcome"] for s in boot["steps"]} == {"started"}


# -- escalation and budget --------------------------------------------------------


def test_faults_beyond_the_restart_budget_reach_the_kernel(settings: Settings) -> None:
    class Budgeted(Consumer):
        max_restarts = 2

    last = ConnectionError("third time")
    probe = Probe(start_faults={0: ConnectionError("first"), 1: ConnectionError("second"), 2: last})
    with running(*steps(probe, Budgeted), settings=settings) as kernel:
        assert kernel.wait(timeout=WAIT) is True

        assert kernel.fault is not None
        assert kernel.fault.blueprint == "app"
        assert kernel.fault.step == "app.consumer"
        error = kernel.fault.error
        assert isinstance(error, RestartBudgetError)
        assert error.__cause__ is last
        assert "more than 2 restarts within 60s" in str(error)
        assert "'child'" in str(error)
        assert len(probe.conns) == 3
        assert probe.stop_reasons() == [("child.conn", StopReason.RESTART)] * 2


def test_fault_not_in_restart_on_escalates_without_restart(settings: Settings) -> None:
    probe = Probe()
    log = EventLog()
    error = ValueError("corrupt frame")
    with running(*steps(probe), settings=settings, observer=log) as kernel:
        probe.conns[0].ctx.fail(error, step="child.conn")

        assert kernel.wait(timeout=WAIT) is True
        assert kernel.fault is not None
        assert kernel.fault.error is error
        assert kernel.fault.step == "app.consumer"
        assert len(probe.conns) == 1
        assert probe.stops == []
        assert probe.hooks == []
        assert restart_events(log) == []

    assert probe.stop_reasons() == [
        ("child.conn", StopReason.SHUTDOWN),
        ("app.watcher", StopReason.SHUTDOWN),
    ]


def test_kernel_run_exits_1_when_the_budget_is_spent(settings: Settings) -> None:
    class NoRestarts(Consumer):
        max_restarts = 0

    probe = Probe(start_faults={0: ConnectionError("lost")})
    kernel = Kernel(plan_of(*steps(probe, NoRestarts), settings=settings), settings)
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(kernel.run()), daemon=True)
    runner.start()
    runner.join(WAIT)

    assert not runner.is_alive()
    assert status == [EXIT_FAILURE]
    assert kernel.fault is not None
    assert isinstance(kernel.fault.error, RestartBudgetError)


# -- backoff ----------------------------------------------------------------------


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_restart_delays_grow_by_the_backoff_factor(settings: Settings) -> None:
    class Backoff(Consumer):
        backoff_initial = 0.05
        backoff_factor = 2.0

    # Each of the first four children reports a lost connection as soon as it starts.
    probe = Probe(start_faults={n: ConnectionError(f"lost {n}") for n in range(4)})
    log = EventLog()
    with running(*steps(probe, Backoff), settings=settings, observer=log):
        assert probe.wait_for(lambda: probe.restarts_done() == 4)

    between = gaps(probe.started_at)
    wanted = [Backoff.backoff(n) for n in range(4)]
    assert wanted == [0.05, 0.1, 0.2, 0.4]
    assert [e.delay for e in restart_events(log)] == wanted
    assert [e.attempt for e in restart_events(log)] == [1, 2, 3, 4]
    for gap, delay in zip(between, wanted, strict=True):
        assert gap >= delay
    assert between[-1] > between[0]


def test_backoff_is_capped_at_backoff_max() -> None:
    class Capped(Consumer):
        backoff_initial = 1.0
        backoff_factor = 3.0
        backoff_max = 5.0

    assert [Capped.backoff(n) for n in range(4)] == [1.0, 3.0, 5.0, 5.0]


def test_restart_whose_start_fails_is_retried_with_backoff(settings: Settings) -> None:
    class Backoff(Consumer):
        backoff_initial = 0.05

    probe = Probe(
        start_faults={0: ConnectionError("lost")},
        start_errors={1: ConnectionRefusedError("broker still down")},
    )
    log = EventLog()
    with running(*steps(probe, Backoff), settings=settings, observer=log) as kernel:
        assert probe.wait_for(lambda: probe.restarts_done() == 1)
        assert kernel.fault is None

    assert len(probe.conns) == 3
    assert [e.attempt for e in restart_events(log)] == [1, 2]
    assert [which for which, _ in probe.hooks] == ["restarting", "restarting", "restarted"]
    between = gaps(probe.started_at)
    assert between[0] >= Backoff.backoff(0)
    assert between[1] >= Backoff.backoff(1)


# -- child start ------------------------------------------------------------------


def test_child_start_is_retried_until_it_succeeds(settings: Settings) -> None:
    class Backoff(Consumer):
        backoff_initial = 0.05

    refused = {n: ConnectionRefusedError(f"attempt {n}") for n in range(2)}
    probe = Probe(start_errors=refused)
    kernel = Kernel(plan_of(*steps(probe, Backoff), settings=settings), settings)

    kernel.start()
    try:
        assert kernel.blueprints[0].state is State.RUNNING
        assert len(probe.conns) == 3
        between = gaps(probe.started_at)
        assert between[0] >= Backoff.backoff(0)
        assert between[1] >= Backoff.backoff(1)
        assert probe.stops == []  # the failed starts had nothing to undo
    finally:
        kernel.stop()


def test_child_start_failure_not_in_restart_on_rolls_back(settings: Settings) -> None:
    probe = Probe(start_errors={0: ValueError("bad credentials")})
    kernel = Kernel(plan_of(*steps(probe), settings=settings), settings)

    with pytest.raises(StartError) as caught:
        kernel.start()

    error = caught.value
    assert (error.blueprint, error.step) == ("app", "app.consumer")
    child_error = error.__cause__
    assert isinstance(child_error, StartError)
    assert (child_error.blueprint, child_error.step) == ("child", "child.conn")
    assert isinstance(child_error.__cause__, ValueError)
    assert len(probe.conns) == 1
    assert probe.stop_reasons() == [("app.watcher", StopReason.ROLLBACK)]
    assert kernel.blueprints[0].state is State.FAILED


def test_child_that_never_starts_spends_the_budget_and_rolls_back(settings: Settings) -> None:
    class Budgeted(Consumer):
        max_restarts = 2

    probe = Probe(start_errors={n: ConnectionRefusedError(f"attempt {n}") for n in range(10)})
    kernel = Kernel(plan_of(*steps(probe, Budgeted), settings=settings), settings)

    with pytest.raises(StartError) as caught:
        kernel.start()

    assert caught.value.step == "app.consumer"
    assert isinstance(caught.value.__cause__, RestartBudgetError)
    assert len(probe.conns) == 3
    assert probe.stop_reasons() == [("app.watcher", StopReason.ROLLBACK)]
