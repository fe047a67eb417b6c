"""examples/bootkit-pidfile, built and installed for real with uv, then run through the CLI."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import REPO, RunCLI, Service, cli_env

EXAMPLE = REPO / "examples" / "bootkit-pidfile"


@pytest.fixture(scope="module")
def pidfile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder with the example installed by ``uv pip install --target``."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to install examples/bootkit-pidfile; run the tests with uv")
    site = tmp_path_factory.mktemp("pidfile") / "site"
    # --refresh-package: always build the example as it is now, never a cached wheel.
    command = [uv, "pip", "install", "--no-deps", "--refresh-package", "bootkit-pidfile"]
    command += ["--python", sys.executable, "--target", str(site), str(EXAMPLE)]
    install = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    return site


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_steps_lists_the_example(run_cli: RunCLI, pidfile_site: Path) -> None:
    result = run_cli("steps", sites=[pidfile_site])

    assert result.returncode == 0, result.stderr
    rows = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]
    assert ["pidfile.lock", "service", "pidfile", "bootkit-pidfile", "0.1.0", "enabled"] in rows
    assert [
        "pidfile.health",
        "service",
        "pidfile",
        "bootkit-pidfile",
        "0.1.0",
        "disabled: its condition: health_port is not set",
    ] in rows


def test_start_serves_healthz_and_removes_the_pid_file(tmp_path: Path, pidfile_site: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "cli-state" / "bootkit.pid"
    env = cli_env(tmp_path, [pidfile_site])
    with Service(["--health-port", str(port)], cwd=tmp_path, env=env) as service:
        service.wait_for_event("kernel_ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
        assert pid_file.read_text() == f"{service.proc.pid}\n"

        service.signal(signal.SIGTERM)

        assert service.wait() == 0, "\n".join(service.lines)
    assert not pid_file.exists()


def test_second_start_with_the_same_state_dir_fails_naming_the_pid(
    tmp_path: Path, pidfile_site: Path, run_cli: RunCLI
) -> None:
    with Service([], cwd=tmp_path, env=cli_env(tmp_path, [pidfile_site])) as first:
        first.wait_for_event("kernel_ready")

        second = run_cli("start", sites=[pidfile_site])

        assert second.returncode == 1
        [error] = [line for line in second.stderr.splitlines() if line.startswith("bootkit:")]
        assert "step 'pidfile.lock'" in error
        assert f"locked by pid {first.proc.pid};" in error
        assert (tmp_path / "cli-state" / "bootkit.pid").read_text() == f"{first.proc.pid}\n"
        first.signal(signal.SIGTERM)
        assert first.wait() == 0, "\n".join(first.lines)
