"""What a running blueprint tells and offers: states, logs and timings, context
services, and the kernel around blueprints."""

from __future__ import annotations

import threading
from typing import ClassVar

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
    StopReason,
)
from bootkit.kernel import EXIT_FAILURE
from bootkit.record import read
from bootkit.testing import EventLog, capture_logs, plan_of, running
from tests.blueprint_support import (
    WAIT,
    Journal,
    blueprint_states,
    chain,
    diamond,
    recorded,
)

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
