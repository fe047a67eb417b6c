"""Blueprint lifecycle: wave order, concurrent start, rollback, reverse stop.

Every test runs real steps in a real `Blueprint`; the steps write what happened to
them into a `Journal` the test owns (records, services and the kernel:
test_blueprint_records).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from bootkit import (
    Blueprint,
    BlueprintEvent,
    Context,
    Kernel,
    Settings,
    StartError,
    State,
    Step,
    StepTimeoutError,
    StopError,
    StopReason,
    Transition,
)
from bootkit.testing import EventLog, make_settings, plan_of, running
from tests.blueprint_support import (
    WAIT,
    Journal,
    blueprint_states,
    chain,
    diamond,
    recorded,
)

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
