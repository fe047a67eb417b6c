"""`bootkit start` run for real in subprocesses: a blueprint of traced steps starts,
stops in reverse on SIGTERM, rolls back a failed start and exits 3 on a second SIGTERM
during a hanging stop."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from bootkit.testing import write_distribution
from tests.support import Service, cli_env

LIFE = """
import sys
import threading

from bootkit import Step, hookimpl


def trace(ctx, line):
    ctx.settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(ctx.settings.state_dir / "trace.log", "a", encoding="utf-8") as f:
        f.write(line + "\\n")


class Traced(Step):
    blueprint = "life"

    def start(self, ctx):
        trace(ctx, "start " + self.name)

    def stop(self, ctx, reason):
        trace(ctx, f"stop {self.name} {reason.value}")


class A(Traced):
    name = "life.a"


class B(Traced):
    name = "life.b"
    requires = ("life.a",)


class C(Traced):
    name = "life.c"
    after = ("life.b",)


class Boom(Traced):
    name = "life.boom"
    requires = ("life.b",)

    def start(self, ctx):
        raise RuntimeError("disk on fire")


class Hang(Traced):
    name = "life.hang"
    requires = ("life.b",)
    stop_timeout = None

    def stop(self, ctx, reason):
        print("hang_stop_entered", file=sys.stderr, flush=True)
        threading.Event().wait()


STEPS = {"life": [A, B, C], "boom": [A, B, Boom], "hang": [A, B, Hang]}
"""


def life_site(tmp_path: Path, variant: str) -> Path:
    """A site with the plugin `life`, contributing the steps of `variant` in LIFE."""
    site = tmp_path / "site"
    write_distribution(
        site,
        "life-steps",
        entry_points={"life": "life_plugin"},
        modules={
            "life_steps.py": LIFE,
            "life_plugin.py": (
                "from bootkit import hookimpl\n"
                "from life_steps import STEPS\n\n\n"
                "@hookimpl\n"
                "def bootkit_add_steps():\n"
                f"    return STEPS[{variant!r}]\n"
            ),
        },
    )
    return site


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``bootkit start ARGS`` with `sites` on the path; killed at teardown if alive."""
    services: list[Service] = []

    def run(*args: str, sites: Sequence[Path] = ()) -> Service:
        service = Service(args, cwd=tmp_path, env=cli_env(tmp_path, sites))
        services.append(service)
        return service

    yield run
    for service in services:
        service.__exit__(None, None, None)


def test_start_runs_until_sigterm_and_stops_in_reverse(
    start: Callable[..., Service], tmp_path: Path
) -> None:
    service = start(sites=[life_site(tmp_path, "life")])
    service.wait_for_event("kernel_ready")
    state = tmp_path / "cli-state"
    assert (state / "trace.log").read_text().splitlines() == [
        "start life.a",
        "start life.b",
        "start life.c",
    ]

    service.signal(signal.SIGTERM)

    assert service.wait() == 0, "\n".join(service.lines)
    assert (state / "trace.log").read_text().splitlines()[3:] == [
        "stop life.c shutdown",
        "stop life.b shutdown",
        "stop life.a shutdown",
    ]
    assert service.others() == []
    timings = json.loads((state / "timings.json").read_text())
    assert timings["boot"]["ok"] is True
    assert timings["shutdown"]["ok"] is True
    assert [s["step"] for s in timings["boot"]["steps"]] == ["life.a", "life.b", "life.c"]
    assert [s["step"] for s in timings["shutdown"]["steps"]] == ["life.c", "life.b", "life.a"]


@pytest.mark.reliability  # L-rows of docs/reliability.md
def test_start_failure_is_one_error_line_naming_step_and_rollback(
    start: Callable[..., Service], tmp_path: Path
) -> None:
    service = start(sites=[life_site(tmp_path, "boom")])

    assert service.wait() == 1
    assert service.others() == [
        "bootkit: error: blueprint 'life' failed to start: step 'life.boom': RuntimeError: "
        "disk on fire; rollback: life.b stopped; life.a stopped"
    ]
    assert "step_start_failed" in [e["event"] for e in service.events()]
    trace = (tmp_path / "cli-state" / "trace.log").read_text().splitlines()
    assert trace == ["start life.a", "start life.b", "stop life.b rollback", "stop life.a rollback"]


@pytest.mark.reliability  # L-rows of docs/reliability.md
def test_second_sigterm_during_a_hanging_stop_exits_3(
    start: Callable[..., Service], tmp_path: Path
) -> None:
    service = start(sites=[life_site(tmp_path, "hang")])
    service.wait_for_event("kernel_ready")
    service.signal(signal.SIGTERM)
    service.wait_for_line(lambda line: line == "hang_stop_entered")
    began = time.monotonic()

    service.signal(signal.SIGTERM)

    assert service.wait(timeout=10) == 3
    assert time.monotonic() - began < 5
    assert "cold_shutdown" in [e["event"] for e in service.events()]
    assert "kernel_stopped" not in [e["event"] for e in service.events()]
