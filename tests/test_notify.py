"""Readiness: sd_notify datagrams to a real NOTIFY_SOCKET, and the `bootkit status` probe,
from real `bootkit start` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootkit import BlueprintStep, Context, Settings, Step, StopReason
from bootkit.notify import STATUS_FILE, Readiness, SdNotify, status, watchdog_interval
from bootkit.testing import plan_of, running, write_distribution
from tests.support import RunCLI, Service, cli_env

WAIT = 20.0

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
    stop_timeout = 7.5

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


class Listener:
    """A service manager's end of NOTIFY_SOCKET: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(WAIT)
        self.datagrams: list[str] = []
        self.received: list[float] = []  # when each datagram came

    def until(self, line: str, times: int = 1) -> list[str]:
        """Receive datagrams until `times` of them hold `line`; fails (socket timeout)
        after WAIT seconds without one."""
        while sum(line in d.split("\n") for d in self.datagrams) < times:
            self.datagrams.append(self.sock.recv(4096).decode())
            self.received.append(time.monotonic())
        return self.datagrams

    def rest(self) -> list[str]:
        """Every datagram already queued (the sender has exited: nothing more comes)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.datagrams.append(self.sock.recv(4096).decode())
                self.received.append(time.monotonic())
        except BlockingIOError:
            return self.datagrams


@pytest.fixture
def slow_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_distribution(
        site, "slow-plugin", entry_points={"slow": "slow_plugin"}, modules={"slow_plugin.py": SLOW}
    )
    return site


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    listening = Listener(str(tmp_path / "notify.sock"))
    yield listening
    listening.sock.close()


def test_start_sends_status_ready_and_stopping_in_order(
    tmp_path: Path, slow_site: Path, listener: Listener
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    env = cli_env(
        tmp_path,
        [slow_site],
        {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "SLOW_GATE": str(gate)},
    )
    with Service([], cwd=tmp_path, env=env) as service:
        listener.until("READY=1")
        service.signal(signal.SIGTERM)
        assert service.wait(WAIT) == 0
    assert listener.rest() == [
        "STATUS=starting slow.step (slow)\nEXTEND_TIMEOUT_USEC=42000000",
        "READY=1\nSTATUS=ready",
        "STOPPING=1\nSTATUS=stopping",
        "STATUS=stopping slow.step (slow)\nEXTEND_TIMEOUT_USEC=7500000",
    ]


def test_status_flips_from_starting_to_ready_to_not_running(
    tmp_path: Path, slow_site: Path, run_cli: RunCLI
) -> None:
    gate = tmp_path / "gate"
    env = cli_env(tmp_path, [slow_site], {"SLOW_GATE": str(gate)})  # no service manager
    state = Path(env["BOOTKIT_STATE_DIR"])

    before = run_cli("status")
    assert (before.returncode, before.stderr.split(":")[0]) == (1, "not running")
    with Service([], cwd=tmp_path, env=env) as service:
        service.wait_for_event("kernel_starting", WAIT)  # slow.step waits for the gate
        starting = run_cli("status")
        assert (starting.returncode, starting.stderr.split(" (")[0]) == (1, "starting")
        gate.touch()
        deadline = time.monotonic() + WAIT
        while (ready := run_cli("status")).returncode != 0:
            assert time.monotonic() < deadline, ready.stderr
        assert ready.stdout.startswith(f"ready (pid {service.proc.pid}, ")
        service.signal(signal.SIGTERM)
        assert service.wait(WAIT) == 0
    after = run_cli("status")
    assert after.returncode == 1
    assert after.stderr.startswith(f"not running: pid {service.proc.pid} is gone")
    assert json.loads((state / STATUS_FILE).read_text())["state"] == "stopped"


def test_abstract_socket_hears_a_kernel_with_nothing_to_start(tmp_path: Path) -> None:
    address = f"@bootkit-test-{uuid.uuid4().hex}"
    listening = Listener(address)
    env = cli_env(tmp_path, env={"NOTIFY_SOCKET": address})  # every plugin blocked
    try:
        with Service([], cwd=tmp_path, env=env) as service:
            listening.until("READY=1")
            service.signal(signal.SIGTERM)
            assert service.wait(WAIT) == 0
        assert listening.rest() == ["READY=1\nSTATUS=ready", "STOPPING=1\nSTATUS=stopping"]
    finally:
        listening.sock.close()


def test_watchdog_pings_at_half_the_interval_while_running(
    tmp_path: Path, slow_site: Path, listener: Listener
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    env = cli_env(
        tmp_path,
        [slow_site],
        {
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "SLOW_GATE": str(gate),
            "WATCHDOG_USEC": "100000",
        },
    )
    with Service([], cwd=tmp_path, env=env) as service:
        listener.until("WATCHDOG=1", times=9)
        service.signal(signal.SIGTERM)
        assert service.wait(WAIT) == 0
    datagrams = listener.rest()
    assert datagrams.index("READY=1\nSTATUS=ready") < datagrams.index("WATCHDOG=1")
    assert "WATCHDOG=1" not in datagrams[datagrams.index("STOPPING=1\nSTATUS=stopping") :]
    # Every half WATCHDOG_USEC (0.05 s), measured over eight gaps so that one late
    # wake-up (here or in the worker) does not decide it.
    pings = [t for d, t in zip(datagrams, listener.received, strict=True) if d == "WATCHDOG=1"]
    mean = (pings[8] - pings[0]) / 8
    assert 0.04 <= mean <= 0.085


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}, 42) == 3.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "42"}, 42) == 3.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({}, 42) is None


class Quick(Step):
    name = "q.step"
    blueprint = "q"

    def start(self, ctx: Context) -> None:
        pass

    def stop(self, ctx: Context, reason: StopReason) -> None:
        pass


def test_without_notify_socket_only_the_status_file_changes(settings: Settings) -> None:
    readiness = Readiness(plan_of(Quick, settings=settings), settings.state_dir, SdNotify(""))
    path = settings.state_dir / STATUS_FILE
    assert json.loads(path.read_text())["state"] == "starting"
    readiness.kernel_starting()
    with running(Quick, settings=settings, observer=readiness):
        assert json.loads(path.read_text())["state"] == "ready"
        assert status(settings.state_dir)[0]
    assert json.loads(path.read_text())["state"] == "stopping"
    readiness.close()
    ready, line = status(settings.state_dir)
    assert (ready, line.split(" (")[0]) == (False, "stopped")


def test_a_child_restart_while_running_shows_in_status_only(
    settings: Settings, tmp_path: Path, listener: Listener
) -> None:
    contexts: list[Context] = []

    class Conn(Step):
        name = "r.conn"
        blueprint = "inner"

        def start(self, ctx: Context) -> None:
            contexts.append(ctx)

    class Keeper(BlueprintStep):
        name = "r.keeper"
        blueprint = "outer"
        hosts = "inner"
        restart_on = (ConnectionError,)
        backoff_initial = 0.01

    notify = SdNotify(str(tmp_path / "notify.sock"))
    readiness = Readiness(plan_of(Keeper, Conn, settings=settings), settings.state_dir, notify)
    readiness.kernel_starting()
    with running(Keeper, Conn, settings=settings, observer=readiness):
        listener.until("READY=1")
        contexts[0].fail(ConnectionError("broker\ngone"), step="r.conn")
        listener.until("STATUS=ready", times=2)  # READY=1 said it once
        assert json.loads((settings.state_dir / STATUS_FILE).read_text())["state"] == "ready"
    readiness.close()
    during = listener.datagrams[listener.datagrams.index("READY=1\nSTATUS=ready") + 1 :]
    assert "STATUS=restarting inner in 0.01s (attempt 1): ConnectionError: broker gone" in during
    assert "STATUS=starting r.conn (inner)" in during
    assert during[-1] == "STATUS=ready"
    assert not [d for d in during if "EXTEND_TIMEOUT_USEC" in d]


def test_status_of_a_dead_or_reused_pid_is_not_ready(settings: Settings) -> None:
    settings.state_dir.mkdir(parents=True)
    path = settings.state_dir / STATUS_FILE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(WAIT)
    path.write_text(json.dumps({"pid": dead.pid, "state": "ready", "since": time.time()}))
    assert status(settings.state_dir) == (
        False,
        f"not running: pid {dead.pid} is gone (last state ready)",
    )
    # A kill -9 left "ready" behind and this process got the pid: not the same process.
    path.write_text(
        json.dumps({"pid": os.getpid(), "started": "0", "state": "ready", "since": time.time()})
    )
    ready, line = status(settings.state_dir)
    if Path(f"/proc/{os.getpid()}/stat").exists():
        assert not ready
        assert line.endswith("another process has that pid now")


def test_status_of_an_unreadable_file_is_one_line(settings: Settings) -> None:
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / STATUS_FILE).write_text("{")
    ready, line = status(settings.state_dir)
    assert not ready
    assert line.startswith("unknown: cannot read")
    assert "\n" not in line


# Runs a light command in a fresh interpreter with the workspace's plugins installed
# (not blocked), then says which costly modules it imported.
LIGHT = """
import sys
from bootkit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
costly = ("networkx", "structlog", "kombu", "bootkit.plugins")
print(sorted(m for m in costly if m in sys.modules))
"""


@pytest.mark.parametrize("command", [["status"], ["analyze", "blame"]])
def test_status_and_analyze_load_no_plugin(tmp_path: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
    done = subprocess.run(
        [sys.executable, "-c", LIGHT, "--state-dir", str(tmp_path), *command],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.stdout.splitlines()[-1] == "[]"
