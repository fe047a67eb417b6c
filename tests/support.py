"""Helpers shared by the kernel's tests: the CLI in a subprocess, and its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


RunCLI = Callable[..., Result]


def cli_env(
    tmp_path: Path, sites: Sequence[Path] = (), env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a `bootkit` subprocess: its own state folder, extra site folders."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
    base["BOOTKIT_STATE_DIR"] = str(tmp_path / "cli-state")
    if sites:
        base["PYTHONPATH"] = os.pathsep.join(str(s) for s in sites)
    # The kernel's tests see only the plugins they install: block the environment's own
    # (the workspace plugins); -p specs add up across sources, so a test can add more.
    own = ",".join(f"no:{ep.name}" for ep in entry_points(group="bootkit"))
    extra = dict(env or {})
    specs = [s for s in (own, extra.pop("BOOTKIT_PLUGINS", "")) if s]
    if specs:
        base["BOOTKIT_PLUGINS"] = ",".join(specs)
    base.update(extra)
    return base


def one_error_line(stderr: str) -> str:
    """The single line a user error prints; fails when there is more, or a traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("bootkit: error: "), stderr
    return lines[0]


class Service:
    """``bootkit start`` in a subprocess, its stderr collected line by line by a thread.

    Logs are JSON (``--log-format json``), so events are found by name; lines that are
    not JSON events are what bootkit printed outside its log.
    """

    def __init__(self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bootkit", "--log-format", "json", "start", *args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="stderr-reader", daemon=True)
        self._reader.start()

    def __enter__(self) -> Service:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=30)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def events(self) -> list[dict[str, Any]]:
        """The log events printed so far."""
        with self._changed:
            return [e for e in map(_event, self.lines) if e is not None]

    def others(self) -> list[str]:
        """Lines of stderr that are not log events."""
        with self._changed:
            return [line for line in self.lines if _event(line) is None]

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 30) -> None:
        """Wait for a stderr line matching `predicate`; fail the test if none comes."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(map(predicate, self.lines)) or self._eof, timeout
            )
            if not found or not any(map(predicate, self.lines)):
                pytest.fail(f"no such line within {timeout}s; stderr:\n" + "\n".join(self.lines))

    def wait_for_event(self, name: str, timeout: float = 30) -> None:
        """Wait for the log event `name`; fail the test if it does not come."""
        self.wait_for_line(lambda line: (_event(line) or {}).get("event") == name, timeout)

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        """Wait for the process to exit and its stderr to be read; its exit status."""
        status = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        assert not self._reader.is_alive(), "stderr still open after exit"
        return status


def _event(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "event" in data else None
