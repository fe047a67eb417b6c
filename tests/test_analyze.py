"""`bootkit analyze` on real runs of steps that sleep known durations."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pytest

from bootkit import BlueprintStep, Context, Settings, StartError, Step, StopReason
from bootkit.analyze import (
    blame,
    blame_text,
    chain_text,
    critical_chain,
    from_record,
    load,
    plot,
    rows,
)
from bootkit.testing import running
from tests.support import RunCLI, one_error_line

SVG = "{http://www.w3.org/2000/svg}"


def sleeper(step_name: str, seconds: float, *needs: str, blueprint: str = "main") -> type[Step]:
    """A step that takes `seconds` to start and half that to stop."""
    home = blueprint

    class Sleeper(Step):
        name = step_name
        blueprint = home
        requires: ClassVar[tuple[str, ...]] = needs

        def start(self, ctx: Context) -> None:
            time.sleep(seconds)

        def stop(self, ctx: Context, reason: StopReason) -> None:
            time.sleep(seconds / 2)

    return Sleeper


# a (0.05) -> b (0.2) -> d (0.01), a -> c (0.1) -> d: the chain runs through b.
STEPS = (
    sleeper("t.a", 0.05),
    sleeper("t.b", 0.2, "t.a"),
    sleeper("t.c", 0.1, "t.a"),
    sleeper("t.d", 0.01, "t.b", "t.c"),
)


@pytest.fixture
def record(settings: Settings) -> Path:
    """The state folder of a finished run (boot and shutdown) of STEPS."""
    with running(*STEPS, settings=settings):
        pass
    return settings.state_dir


def bars(svg: str) -> list[ET.Element]:
    return [e for e in ET.fromstring(svg).iter(f"{SVG}rect") if "bar" in e.get("class", "")]


def test_blame_orders_steps_by_time_taken(record: Path) -> None:
    phase = load(record)
    assert [t.step for t in blame(phase)] == ["t.b", "t.c", "t.a", "t.d"]
    assert blame(phase)[0].seconds >= 0.2


def test_critical_chain_follows_the_waits_that_decided_readiness(record: Path) -> None:
    chain = critical_chain(load(record))
    assert [(depth, t.step) for depth, t in chain] == [(0, "t.a"), (0, "t.b"), (0, "t.d")]
    a, b, d = (t for _, t in chain)
    assert b.offset >= a.end - 0.005
    assert d.offset >= b.end - 0.005
    assert b.seconds >= 0.2


def test_shutdown_chain_runs_the_other_way(record: Path) -> None:
    phase = load(record, "shutdown")
    assert [t.step for _, t in critical_chain(phase)] == ["t.d", "t.b", "t.a"]
    assert [t.step for t in blame(phase)] == ["t.b", "t.c", "t.a", "t.d"]


def test_critical_chain_counts_the_wave_barrier(settings: Settings) -> None:
    # t.slow and t.fast share wave 0; t.next needs only t.fast, yet starts when the
    # whole wave is done: t.slow decided it.
    steps = (sleeper("t.fast", 0.01), sleeper("t.slow", 0.15), sleeper("t.next", 0.01, "t.fast"))
    with running(*steps, settings=settings):
        pass
    chain = critical_chain(load(settings.state_dir))
    assert [t.step for _, t in chain] == ["t.slow", "t.next"]


class Host(BlueprintStep):
    name = "t.host"
    blueprint = "main"
    hosts = "inner"
    requires = ("t.first",)


def test_a_child_blueprint_chain_is_nested_under_its_host(settings: Settings) -> None:
    steps = (
        sleeper("t.first", 0.02),
        Host,
        sleeper("t.quick", 0.01, blueprint="inner"),
        sleeper("t.long", 0.12, blueprint="inner"),
        sleeper("t.after", 0.03, "t.long", blueprint="inner"),
        sleeper("t.late", 0.01, "t.quick", blueprint="inner"),
    )
    with running(*steps, settings=settings):
        pass
    phase = load(settings.state_dir)
    assert [(depth, t.step) for depth, t in critical_chain(phase)] == [
        (0, "t.first"),
        (0, "t.host"),
        (1, "t.long"),
        (1, "t.after"),
    ]
    assert [depth for depth, _ in rows(phase)] == [0, 0, 1, 1, 1, 1]
    host = next(t for t in phase.steps if t.step == "t.host")
    assert host.seconds >= 0.15  # the child's boot is inside its host's start


class Broken(Step):
    name = "t.broken"
    blueprint = "main"
    requires = ("t.a",)

    def start(self, ctx: Context) -> None:
        raise RuntimeError("no disk")


def test_a_failed_boot_is_analyzed_with_its_outcome(settings: Settings) -> None:
    with pytest.raises(StartError), running(STEPS[0], Broken, settings=settings):
        pass
    phase = load(settings.state_dir)
    assert not phase.ok
    assert "  (main)  [start_failed]" in blame_text(phase)
    header, *links = chain_text(phase).splitlines()
    assert "(failed)" in header
    assert [line.split(" @")[0] for line in links] == ["t.a", "t.broken"]
    assert "failed in" in plot(phase)


def test_plot_is_svg_with_one_bar_per_step_and_the_chain_highlighted(record: Path) -> None:
    found = bars(plot(load(record)))
    assert sorted(str(b.get("data-step")) for b in found) == ["t.a", "t.b", "t.c", "t.d"]
    assert len({b.get("id") for b in found}) == 4
    critical = {b.get("data-step") for b in found if "critical" in str(b.get("class"))}
    assert critical == {"t.a", "t.b", "t.d"}
    # bar lengths follow the durations: t.b (0.2 s) is longer than t.c (0.1 s)
    width = {b.get("data-step"): float(str(b.get("width"))) for b in found}
    assert width["t.b"] > width["t.c"] > width["t.d"]


def test_plot_escapes_and_ascii_folds_step_names() -> None:
    step = {"blueprint": "m", "wave": 0, "offset": 0.0, "seconds": 0.1, "after": []}
    record = {
        "boot": {
            "seconds": 0.2,
            "ok": True,
            "steps": [
                {**step, "step": 'x.<b>&"caf\u00e9'},
                {**step, "step": "x.plain", "offset": 0.1, "after": ['x.<b>&"caf\u00e9']},
            ],
        }
    }
    svg = plot(from_record(record, "boot", "test"))
    svg.encode("ascii")  # every label folded to ASCII
    assert [b.get("data-step") for b in bars(svg)] == ['x.<b>&"caf\\xe9', "x.plain"]


def test_analyze_commands_read_the_state_folder(run_cli: RunCLI, record: Path) -> None:
    blamed = run_cli("--state-dir", str(record), "analyze", "blame")
    assert blamed.returncode == 0, blamed.stderr
    lines = blamed.stdout.splitlines()
    assert lines[0].startswith("boot: ")
    assert [line.split()[1] for line in lines[1:]] == ["t.b", "t.c", "t.a", "t.d"]

    chain = run_cli("--state-dir", str(record), "analyze", "critical-chain")
    assert chain.returncode == 0, chain.stderr
    assert [line.split(" @")[0] for line in chain.stdout.splitlines()[1:]] == [
        "t.a",
        "t.b",
        "t.d",
    ]
    assert " +2" in chain.stdout.splitlines()[2]  # t.b: +200.xms

    out = record / "plot.svg"
    plotted = run_cli("--state-dir", str(record), "analyze", "plot", "-o", str(out))
    assert plotted.returncode == 0, plotted.stderr
    assert len(bars(out.read_text())) == 4


def test_analyze_json_and_shutdown(run_cli: RunCLI, record: Path) -> None:
    blamed = run_cli("--state-dir", str(record), "analyze", "blame", "--json")
    assert [(s["step"], s["blueprint"]) for s in json.loads(blamed.stdout)] == [
        ("t.b", "main"),
        ("t.c", "main"),
        ("t.a", "main"),
        ("t.d", "main"),
    ]
    chain = run_cli("--state-dir", str(record), "analyze", "critical-chain", "--json", "--shutdown")
    links = json.loads(chain.stdout)
    assert [(s["depth"], s["step"]) for s in links] == [(0, "t.d"), (0, "t.b"), (0, "t.a")]
    assert links[1]["outcome"] == "stopped"
    plotted = run_cli("--state-dir", str(record), "analyze", "plot", "--shutdown")
    assert "bootkit shutdown: stopped" in plotted.stdout
    assert len(bars(plotted.stdout)) == 4


def test_analyze_without_a_record_is_one_line(run_cli: RunCLI, tmp_path: Path) -> None:
    result = run_cli("--state-dir", str(tmp_path / "empty"), "analyze", "blame")
    assert result.returncode == 2
    assert "run `bootkit start` with this --state-dir first" in one_error_line(result.stderr)


def test_analyze_a_broken_record_is_one_line(run_cli: RunCLI, tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "timings.json").write_text("{not json")
    result = run_cli("--state-dir", str(tmp_path / "broken"), "analyze", "plot")
    assert result.returncode == 2
    assert "cannot read the run record" in one_error_line(result.stderr)


def test_analyze_shutdown_of_a_run_still_going_is_one_line(
    run_cli: RunCLI, settings: Settings
) -> None:
    with running(*STEPS[:1], settings=settings):
        result = run_cli("--state-dir", str(settings.state_dir), "analyze", "blame", "--shutdown")
    assert result.returncode == 2
    assert "has no shutdown" in one_error_line(result.stderr)
