"""`bootkit analyze`, readiness over sd_notify, and `bootkit status`, on real runs."""

from __future__ import annotations

import json
import signal
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pytest

from bootkit import Context, Settings, Step, StopReason
from bootkit.analyze import blame, critical_chain, load, plot
from bootkit.testing import running, write_distribution
from tests.support import RunCLI, Service, cli_env, one_error_line

WAIT = 20.0


def sleeper(step_name: str, seconds: float, *needs: str) -> type[Step]:
    class Sleeper(Step):
        name = step_name
        blueprint = "main"
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
    """The state folder of a finished run of STEPS."""
    with running(*STEPS, settings=settings):
        pass
    return settings.state_dir


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


def test_shutdown_chain_runs_the_other_way(record: Path) -> None:
    chain = critical_chain(load(record, "shutdown"))
    assert [t.step for _, t in chain] == ["t.d", "t.b", "t.a"]


def test_plot_is_svg_with_one_bar_per_step_and_the_chain_highlighted(record: Path) -> None:
    svg = plot(load(record))
    root = ET.fromstring(svg)
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
    assert sorted(str(b.get("data-step")) for b in bars) == ["t.a", "t.b", "t.c", "t.d"]
    red = {b.get("data-step") for b in bars if b.get("fill") == "#e15759"}
    assert red == {"t.a", "t.b", "t.d"}


def test_analyze_commands_read_the_state_folder(run_cli: RunCLI, record: Path) -> None:
    blamed = run_cli("--state-dir", str(record), "analyze", "blame")
    assert blamed.returncode == 0, blamed.stderr
    assert [line.split()[1] for line in blamed.stdout.splitlines()[1:]] == [
        "t.b",
        "t.c",
        "t.a",
        "t.d",
    ]
    chain = run_cli("--state-dir", str(record), "analyze", "critical-chain", "--json")
    assert [link["step"] for link in json.loads(chain.stdout)] == ["t.a", "t.b", "t.d"]
    out = record / "plot.svg"
    plotted = run_cli("--state-dir", str(record), "analyze", "plot", "-o", str(out))
    assert plotted.returncode == 0
    ET.parse(out)


def test_analyze_without_a_record_is_one_line(run_cli: RunCLI, tmp_path: Path) -> None:
    result = run_cli("--state-dir", str(tmp_path / "empty"), "analyze", "blame")
    assert result.returncode == 2
    assert "run `bootkit start` with this --state-dir first" in one_error_line(result.stderr)


# -- a real `bootkit start`: sd_notify and the status probe --------------------------

# Starts only once the test creates the file named by SLOW_GATE: the test looks at the
# status while the step is still starting, with no race.
SLOW = """
import os
import time
from pathlib import Path

from bootkit import Step, hookimpl


class Slow(Step):
    name = "slow.step"
    blueprint = "slow"
    start_timeout = 42.0

    def start(self, ctx):
        gate = Path(os.environ["SLOW_GATE"])
        deadline = time.monotonic() + 30
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self, ctx, reason):
        pass


@hookimpl
def bootkit_add_steps():
    return [Slow]
"""


def test_start_tells_notify_socket_ready_status_stopping_and_status_flips(
    tmp_path: Path, run_cli: RunCLI
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site, "slow-plugin", entry_points={"slow": "slow_plugin"}, modules={"slow_plugin.py": SLOW}
    )
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(WAIT)
    gate = tmp_path / "gate"
    env = cli_env(tmp_path, [site], {"NOTIFY_SOCKET": address, "SLOW_GATE": str(gate)})
    state = Path(env["BOOTKIT_STATE_DIR"])

    assert run_cli("status").returncode == 1  # nothing runs yet
    with Service([], cwd=tmp_path, env=env) as service:
        messages: list[str] = []
        while "STATUS=starting slow.step (slow)" not in messages:
            messages += listener.recv(4096).decode().split("\n")
        starting = run_cli("status")
        assert (starting.returncode, starting.stderr.split(" (")[0]) == (1, "starting")
        gate.touch()
        while "READY=1" not in messages:
            messages += listener.recv(4096).decode().split("\n")
        status = run_cli("status")
        assert (status.returncode, status.stdout.split(" (")[0]) == (0, "ready")
        service.signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages += listener.recv(4096).decode().split("\n")
        assert service.wait(WAIT) == 0
    listener.close()

    assert messages.index("STATUS=starting slow.step (slow)") < messages.index("READY=1")
    assert "EXTEND_TIMEOUT_USEC=42000000" in messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    stopped = run_cli("status")
    assert stopped.returncode == 1
    assert "not running" in stopped.stderr
    assert json.loads((state / "status.json").read_text())["state"] == "stopped"
