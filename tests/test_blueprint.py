"""Blueprint and kernel lifecycle: wave start, reverse stop, rollback, timeouts, records.

Every test runs real steps in a real `Blueprint` or `Kernel`; the steps write what
happened to them into a `Journal` the test owns.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import ClassVar, NamedTuple

import pytest

from bootkit import (
    Blueprint,
    BlueprintEvent,
    BlueprintStep,
    Context,
    Kernel,
    ServiceNotFoundError,
    Settings,
    StartError,
    State,
    Step,
    StepTimeoutError,
    StopError,
    StopReason,
    Transition,
)
from bootkit.kernel import EXIT_FAILURE
from bootkit.record import read
from bootkit.testing import EventLog, capture_logs, make_settings, plan_of, running

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


# -- order ------------------------------------------------------------------------


def test_waves_start_after_every_step_they_require_is_ready(settings: Settings) -> None:
    journal = Journal()
    steps = diamond(journal)
    assert plan_of(*steps, settings=settings).blueprints["app"].waves == (
        ("app.a",),
        ("app.b", "app.c"),
        ("app.d",),
    )

    with running(*steps, settings=settings):
        pass

    for step, needs in [("app.b", ["app.a"]), ("app.c", ["app.a"]), ("app.d", ["app.b", "app.c"])]:
        for need in needs:
            assert journal.index(need, "ready") < journal.index(step, "start"), (step, need)


def test_steps_begin_starting_in_plan_order(settings: Settings) -> None:
    log = EventLog()
    with running(*diamond(Journal()), settings=settings, observer=log):
        pass

    assert log.steps(Transition.STARTING) == ["app.a", "app.b", "app.c", "app.d"]


def test_stop_begins_in_exact_reverse_of_start_order(settings: Settings) -> None:
    log = EventLog()
    with running(*diamond(Journal()), settings=settings, observer=log):
        pass

    assert log.steps(Transition.STOPPING) == ["app.d", "app.c", "app.b", "app.a"]


def test_stop_finishes_each_wave_before_stopping_the_wave_before_it(settings: Settings) -> None:
    journal = Journal()
    with running(*diamond(journal), settings=settings):
        pass

    stop_at = {step: i for i, (step, _) in enumerate(journal.stops())}
    assert set(stop_at) == {"app.a", "app.b", "app.c", "app.d"}
    assert stop_at["app.d"] < min(stop_at["app.b"], stop_at["app.c"])
    assert max(stop_at["app.b"], stop_at["app.c"]) < stop_at["app.a"]


def test_serial_start_stops_steps_in_exact_reverse(tmp_path: Path) -> None:
    journal = Journal()
    with running(*diamond(journal), settings=make_settings(tmp_path, serial_start=True)):
        pass

    assert journal.steps("ready") == ["app.a", "app.b", "app.c", "app.d"]
    assert journal.stops() == [
        ("app.d", StopReason.SHUTDOWN),
        ("app.c", StopReason.SHUTDOWN),
        ("app.b", StopReason.SHUTDOWN),
        ("app.a", StopReason.SHUTDOWN),
    ]


# -- concurrency ------------------------------------------------------------------


def test_steps_of_one_wave_start_concurrently(settings: Settings) -> None:
    # The barrier only opens when all three starts wait on it at the same time.
    barrier = threading.Barrier(3, timeout=WAIT)
    passed: list[str] = []

    class Together(Step):
        blueprint = "app"

        def start(self, ctx: Context) -> None:
            barrier.wait()
            passed.append(self.name)

    class One(Together):
        name = "app.one"

    class Two(Together):
        name = "app.two"

    class Three(Together):
        name = "app.three"

    with running(One, Two, Three, settings=settings) as kernel:
        assert kernel.blueprints[0].state is State.RUNNING

    assert sorted(passed) == ["app.one", "app.three", "app.two"]
    assert not barrier.broken


def test_serial_start_starts_one_step_at_a_time(tmp_path: Path) -> None:
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    class Alone(Step):
        blueprint = "app"

        def start(self, ctx: Context) -> None:
            began = time.monotonic()
            threading.Event().wait(0.05)  # a start that takes a while, so overlaps would show
            with lock:
                spans.append((began, time.monotonic()))

    class One(Alone):
        name = "app.one"

    class Two(Alone):
        name = "app.two"

    class Three(Alone):
        name = "app.three"

    settings = make_settings(tmp_path, serial_start=True)
    assert plan_of(One, Two, Three, settings=settings).blueprints["app"].waves == (
        ("app.one", "app.three", "app.two"),
    )
    with running(One, Two, Three, settings=settings):
        pass

    spans.sort()
    assert len(spans) == 3
    for (_, ended), (began, _) in itertools.pairwise(spans):
        assert began >= ended


def test_start_returns_only_when_every_step_is_ready(settings: Settings) -> None:
    ready: list[str] = []

    class Slow(Step):
        name = "app.slow"
        blueprint = "app"

        def start(self, ctx: Context) -> None:
            threading.Event().wait(0.2)  # getting ready takes a while
            ready.append(self.name)

    class Quick(Step):
        name = "app.quick"
        blueprint = "app"

        def start(self, ctx: Context) -> None:
            ready.append(self.name)

    kernel = Kernel(plan_of(Slow, Quick, settings=settings), settings)
    kernel.start()
    try:
        assert sorted(ready) == ["app.quick", "app.slow"]
        assert kernel.blueprints[0].state is State.RUNNING
    finally:
        kernel.stop()


# -- rollback ---------------------------------------------------------------------

N = 4


@pytest.mark.parametrize("k", range(1, N + 1))
def test_failed_start_stops_started_steps_once_each_in_reverse(k: int, settings: Settings) -> None:
    journal = Journal()
    kernel = Kernel(plan_of(*chain(journal, N, fail_at=k), settings=settings), settings)

    with pytest.raises(StartError):
        kernel.start()

    earlier = [f"app.s{i}" for i in range(1, k)]
    assert journal.steps("start") == [*earlier, f"app.s{k}"]
    assert journal.stops() == [(step, StopReason.ROLLBACK) for step in reversed(earlier)]
    assert kernel.blueprints[0].state is State.FAILED


@pytest.mark.reliability  # L-rows of docs/reliability.md
@pytest.mark.parametrize("k", range(1, N + 1))
def test_start_error_names_failing_step_cause_and_rollback(k: int, settings: Settings) -> None:
    kernel = Kernel(plan_of(*chain(Journal(), N, fail_at=k), settings=settings), settings)

    with pytest.raises(StartError) as caught:
        kernel.start()

    error = caught.value
    undone = [f"app.s{i} stopped" for i in reversed(range(1, k))]
    assert error.blueprint == "app"
    assert error.step == f"app.s{k}"
    assert error.rollback == undone
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == f"step {k} broke"
    message = str(error)
    assert f"step 'app.s{k}'" in message
    assert f"RuntimeError: step {k} broke" in message
    assert ("; ".join(undone) if undone else "nothing to undo") in message


def test_failed_start_stops_steps_that_started_in_the_same_wave(settings: Settings) -> None:
    journal = Journal()
    steps = [
        recorded("app.base", journal),
        recorded("app.good", journal, needs=("app.base",)),
        recorded("app.bad", journal, needs=("app.base",), error=OSError("disk full")),
        recorded("app.last", journal, needs=("app.good", "app.bad")),
    ]
    kernel = Kernel(plan_of(*steps, settings=settings), settings)

    with pytest.raises(StartError) as caught:
        kernel.start()

    assert caught.value.step == "app.bad"
    assert journal.stops() == [
        ("app.good", StopReason.ROLLBACK),
        ("app.base", StopReason.ROLLBACK),
    ]
    assert "app.last" not in journal.steps("start")


def test_failed_start_ends_in_failed_state_carrying_the_error(settings: Settings) -> None:
    log = EventLog()
    kernel = Kernel(plan_of(*chain(Journal(), 2, fail_at=2), settings=settings), settings, log)

    with pytest.raises(StartError) as caught:
        kernel.start()

    assert blueprint_states(log) == [
        (State.CREATED, State.STARTING),
        (State.STARTING, State.FAILED),
    ]
    failed = [e for e in log.events if isinstance(e, BlueprintEvent) and e.state is State.FAILED]
    assert failed[0].error is caught.value


@pytest.mark.reliability  # L-rows of docs/reliability.md
def test_start_past_start_timeout_rolls_back_and_stops_the_late_step(settings: Settings) -> None:
    journal = Journal()
    stopped = threading.Event()

    class Late(Step):
        name = "app.late"
        blueprint = "app"
        requires = ("app.first",)
        start_timeout = 0.2

        def __init__(self) -> None:
            self.released = threading.Event()

        def start(self, ctx: Context) -> None:
            self.released.wait(WAIT)  # never ready on its own; its stop lets it go

        def stop(self, ctx: Context, reason: StopReason) -> None:
            journal.add(self.name, "stop", reason)
            self.released.set()
            stopped.set()

    kernel = Kernel(plan_of(recorded("app.first", journal), Late, settings=settings), settings)

    began = time.monotonic()
    with pytest.raises(StartError) as caught:
        kernel.start()
    elapsed = time.monotonic() - began

    assert elapsed < 3.0
    assert stopped.wait(WAIT)
    assert journal.stops() == [
        ("app.late", StopReason.ROLLBACK),
        ("app.first", StopReason.ROLLBACK),
    ]
    assert caught.value.step == "app.late"
    assert isinstance(caught.value.__cause__, StepTimeoutError)
    assert "start_timeout" in str(caught.value)
    assert kernel.blueprints[0].state is State.FAILED


# -- stop -------------------------------------------------------------------------


@pytest.mark.reliability  # L-rows of docs/reliability.md
def test_stop_that_raises_is_reported_and_the_others_still_stop(settings: Settings) -> None:
    journal = Journal()

    class Broken(Step):
        name = "app.s2"
        blueprint = "app"
        requires = ("app.s1",)

        def stop(self, ctx: Context, reason: StopReason) -> None:
            journal.add(self.name, "stop", reason)
            raise RuntimeError("socket already closed")

    s1, _, s3 = chain(journal, 3)
    blueprint = Blueprint(plan_of(s1, Broken, s3, settings=settings), "app", settings)
    blueprint.start()

    with pytest.raises(StopError) as caught:
        blueprint.stop()

    assert [step for step, _ in journal.stops()] == ["app.s3", "app.s2", "app.s1"]
    assert caught.value.failures == ["app.s2 stop failed: RuntimeError: socket already closed"]
    assert "app.s2" in str(caught.value)
    assert blueprint.state is State.STOPPED


@pytest.mark.reliability  # L-rows of docs/reliability.md
def test_stop_that_hangs_past_stop_timeout_is_left_behind(settings: Settings) -> None:
    journal = Journal()
    release = threading.Event()

    class Stuck(Step):
        name = "app.s2"
        blueprint = "app"
        requires = ("app.s1",)
        stop_timeout = 0.2

        def stop(self, ctx: Context, reason: StopReason) -> None:
            journal.add(self.name, "stop", reason)
            release.wait(WAIT)

    s1, _, s3 = chain(journal, 3)
    blueprint = Blueprint(plan_of(s1, Stuck, s3, settings=settings), "app", settings)
    blueprint.start()

    began = time.monotonic()
    try:
        with pytest.raises(StopError) as caught:
            blueprint.stop()
        elapsed = time.monotonic() - began
    finally:
        release.set()

    assert elapsed < 3.0
    assert [step for step, _ in journal.stops()] == ["app.s3", "app.s2", "app.s1"]
    assert caught.value.failures == ["app.s2 stop timed out after 0.2s"]
    assert blueprint.state is State.STOPPED


def test_kernel_stop_returns_the_failures_of_its_blueprints(settings: Settings) -> None:
    class Broken(Step):
        name = "app.broken"
        blueprint = "app"

        def stop(self, ctx: Context, reason: StopReason) -> None:
            raise RuntimeError("lost")

    kernel = Kernel(plan_of(Broken, settings=settings), settings)
    kernel.start()

    assert kernel.stop() == ["app.broken stop failed: RuntimeError: lost"]


# -- states, logs, timings --------------------------------------------------------


def test_blueprint_states_are_published_as_events(settings: Settings) -> None:
    log = EventLog()
    with running(*chain(Journal(), 2), settings=settings, observer=log):
        pass

    assert blueprint_states(log) == [
        (State.CREATED, State.STARTING),
        (State.STARTING, State.RUNNING),
        (State.RUNNING, State.STOPPING),
        (State.STOPPING, State.STOPPED),
    ]
    timed = {
        e.state: e.seconds
        for e in log.events
        if isinstance(e, BlueprintEvent) and e.seconds is not None
    }
    assert set(timed) == {State.RUNNING, State.STOPPED}
    assert all(seconds >= 0 for seconds in timed.values())


def test_step_transitions_are_logged_with_step_blueprint_and_seconds(settings: Settings) -> None:
    with capture_logs() as logs, running(*chain(Journal(), 2), settings=settings):
        pass

    for event in ("step_started", "step_stopped"):
        entries = [e for e in logs if e["event"] == event]
        assert sorted(e["step"] for e in entries) == ["app.s1", "app.s2"], event
        for entry in entries:
            assert entry["blueprint"] == "app"
            assert isinstance(entry["seconds"], float)
            assert entry["seconds"] >= 0


def test_blueprint_transitions_are_logged_with_seconds(settings: Settings) -> None:
    with capture_logs() as logs, running(*chain(Journal(), 1), settings=settings):
        pass

    states = [e for e in logs if e["event"] == "blueprint_state"]
    assert [(e["previous"], e["state"]) for e in states] == [
        ("created", "starting"),
        ("starting", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
    ]
    assert all(e["blueprint"] == "app" for e in states)
    assert [e["state"] for e in states if "seconds" in e] == ["running", "stopped"]


def test_failed_step_start_is_logged_with_its_error(settings: Settings) -> None:
    with capture_logs() as logs:
        kernel = Kernel(plan_of(*chain(Journal(), 2, fail_at=2), settings=settings), settings)
        with pytest.raises(StartError):
            kernel.start()

    [failed] = [e for e in logs if e["event"] == "step_start_failed"]
    assert failed["step"] == "app.s2"
    assert failed["blueprint"] == "app"
    assert failed["log_level"] == "error"
    assert isinstance(failed["exc_info"], RuntimeError)
    assert failed["seconds"] >= 0


def test_kernel_records_boot_and_shutdown_timings(settings: Settings) -> None:
    class Pause(Step):
        name = "app.b"
        blueprint = "app"
        requires = ("app.a",)

        def start(self, ctx: Context) -> None:
            threading.Event().wait(0.05)  # a start that takes measurable time

    journal = Journal()
    a, _, c, d = diamond(journal)
    with running(a, Pause, c, d, settings=settings):
        pass

    record = read(settings.state_dir)
    assert (settings.state_dir / "timings.json").is_file()
    boot, shutdown = record["boot"], record["shutdown"]
    assert boot["ok"] is True
    assert shutdown["ok"] is True
    names = ["app.a", "app.b", "app.c", "app.d"]
    assert sorted(s["step"] for s in boot["steps"]) == names
    assert sorted(s["step"] for s in shutdown["steps"]) == names
    assert {s["outcome"] for s in boot["steps"]} == {"started"}
    assert {s["outcome"] for s in shutdown["steps"]} == {"stopped"}

    by_step = {s["step"]: s for s in boot["steps"]}
    assert by_step["app.a"]["after"] == []
    assert by_step["app.b"]["after"] == ["app.a"]
    assert sorted(by_step["app.d"]["after"]) == ["app.b", "app.c"]
    assert [by_step[n]["wave"] for n in names] == [0, 1, 1, 2]
    assert by_step["app.b"]["seconds"] >= 0.04  # it waited 0.05 s
    # d starts only when b has finished starting (rounding allows a microsecond or two).
    b, d_ = by_step["app.b"], by_step["app.d"]
    assert d_["offset"] >= b["offset"] + b["seconds"] - 1e-5
    assert boot["seconds"] >= d_["offset"]
    for step in [*boot["steps"], *shutdown["steps"]]:
        assert step["blueprint"] == "app"
        assert step["offset"] >= 0
        assert step["seconds"] >= 0


def test_failed_boot_is_recorded_with_the_rollback(settings: Settings) -> None:
    kernel = Kernel(plan_of(*chain(Journal(), 3, fail_at=3), settings=settings), settings)
    with pytest.raises(StartError):
        kernel.start()

    boot = read(settings.state_dir)["boot"]
    assert boot["ok"] is False
    assert [(s["step"], s["outcome"]) for s in boot["steps"]] == [
        ("app.s1", "started"),
        ("app.s2", "started"),
        ("app.s3", "start_failed"),
        ("app.s2", "stopped"),
        ("app.s1", "stopped"),
    ]


# -- context services -------------------------------------------------------------


class Greeting:
    def __init__(self, text: str) -> None:
        self.text = text


class Provider(Step):
    name = "app.provider"
    blueprint = "app"

    def start(self, ctx: Context) -> None:
        ctx.provide(Greeting, Greeting("hello"))

    def stop(self, ctx: Context, reason: StopReason) -> None:
        ctx.withdraw(Greeting)


def test_service_provided_by_one_step_is_found_by_a_later_one(settings: Settings) -> None:
    seen: list[Greeting] = []

    class User(Step):
        name = "app.user"
        blueprint = "app"
        requires = ("app.provider",)

        def start(self, ctx: Context) -> None:
            seen.append(ctx.get(Greeting))

    with running(Provider, User, settings=settings) as kernel:
        ctx = kernel.blueprints[0].ctx
        assert seen == [ctx.get(Greeting)]
        assert seen[0].text == "hello"

    assert ctx.find(Greeting) is None  # withdrawn by the provider's stop


def test_service_lookup_falls_through_to_the_parent_blueprint(settings: Settings) -> None:
    seen: list[tuple[str, Greeting | None]] = []

    class Host(BlueprintStep):
        name = "app.host"
        blueprint = "app"
        hosts = "inner"
        requires = ("app.provider",)

    class Inner(Step):
        name = "inner.user"
        blueprint = "inner"

        def start(self, ctx: Context) -> None:
            seen.append((ctx.blueprint, ctx.get(Greeting)))
            ctx.provide(Inner, self)

    with running(Provider, Host, Inner, settings=settings) as kernel:
        outer = kernel.blueprints[0].ctx
        assert seen == [("inner", outer.get(Greeting))]
        assert outer.find(Inner) is None  # a child's services stay in the child


def test_missing_service_error_names_blueprint_service_and_fix(settings: Settings) -> None:
    blueprint = Blueprint(
        plan_of(recorded("app.only", Journal()), settings=settings), "app", settings
    )

    with pytest.raises(ServiceNotFoundError) as caught:
        blueprint.ctx.get(Greeting)

    message = str(caught.value)
    assert "'app'" in message
    assert "Greeting" in message
    assert "requires" in message


# -- kernel -----------------------------------------------------------------------


class Mailbox:
    """Hands a step's context to the test once the step has started."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.arrived = threading.Event()

    def put(self, ctx: Context) -> None:
        self.ctx = ctx
        self.arrived.set()

    def take(self) -> Context:
        assert self.arrived.wait(WAIT), "the step never started"
        assert self.ctx is not None
        return self.ctx


class Reporter(Step):
    """Posts its context to `mailbox`, so the test can report a fault through it."""

    name = "app.reporter"
    blueprint = "app"
    mailbox: ClassVar[Mailbox]

    def start(self, ctx: Context) -> None:
        self.mailbox.put(ctx)


def reporter(mailbox: Mailbox) -> type[Reporter]:
    shared = mailbox

    class Posting(Reporter):
        mailbox = shared

    return Posting


def test_fault_in_a_top_level_blueprint_wakes_kernel_wait(settings: Settings) -> None:
    mailbox = Mailbox()
    error = ConnectionError("gone")
    with running(reporter(mailbox), settings=settings) as kernel:
        assert kernel.wait(timeout=0.05) is False  # nothing to wake it yet

        mailbox.take().fail(error, step="app.reporter")

        assert kernel.wait(timeout=WAIT) is True
        assert kernel.fault is not None
        assert kernel.fault.error is error
        assert kernel.fault.step == "app.reporter"
        assert kernel.fault.blueprint == "app"


@pytest.mark.reliability  # L-rows of docs/reliability.md
def test_fault_makes_kernel_run_stop_and_return_exit_status_1(settings: Settings) -> None:
    journal = Journal()
    mailbox = Mailbox()
    steps = (reporter(mailbox), recorded("app.other", journal))
    kernel = Kernel(plan_of(*steps, settings=settings), settings)
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(kernel.run()), daemon=True)
    runner.start()
    try:
        mailbox.take().fail(RuntimeError("worker lost"))
    finally:
        runner.join(WAIT)

    assert not runner.is_alive()
    assert status == [EXIT_FAILURE]
    assert journal.stops() == [("app.other", StopReason.SHUTDOWN)]
    assert kernel.blueprints[0].state is State.STOPPED


def test_kernel_start_failure_of_second_blueprint_stops_the_first(settings: Settings) -> None:
    journal = Journal()
    steps = [
        recorded("alpha.one", journal),
        recorded("alpha.two", journal, needs=("alpha.one",)),
        recorded("beta.bad", journal, error=ConnectionError("refused")),
    ]
    kernel = Kernel(plan_of(*steps, settings=settings), settings)
    assert [b.name for b in kernel.blueprints] == ["alpha", "beta"]

    with pytest.raises(StartError) as caught:
        kernel.start()

    assert caught.value.blueprint == "beta"
    assert caught.value.step == "beta.bad"
    assert journal.stops() == [
        ("alpha.two", StopReason.ROLLBACK),
        ("alpha.one", StopReason.ROLLBACK),
    ]
    assert [b.state for b in kernel.blueprints] == [State.STOPPED, State.FAILED]
