"""Readiness, told to the service manager (sd_notify) and kept for `bootkit status`.

An observer of the kernel's lifecycle events:

- sd_notify, only when ``NOTIFY_SOCKET`` is set (a path, or ``@name`` for an abstract
  socket): ``STATUS=starting <step> (<blueprint>)`` and ``EXTEND_TIMEOUT_USEC=<the
  step's start_timeout>`` as each step starts, so a slow step gets the time it asked
  for; ``READY=1`` once every top-level blueprint runs; ``STOPPING=1`` and
  ``STATUS=stopping <step>`` on the way down; ``WATCHDOG=1`` every half
  ``WATCHDOG_USEC`` while running, when that is set for this process.
- ``<state_dir>/status.json``: ``{"pid", "state": starting|ready|stopping|stopped,
  "since"}``, rewritten atomically at each change, read by `bootkit status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from bootkit.events import BlueprintEvent, ChildRestart, State, StepEvent, Transition
from bootkit.plan import Plan
from bootkit.record import write_atomically

STATUS_FILE = "status.json"


class SdNotify:
    """Datagrams to ``NOTIFY_SOCKET``; does nothing when it is unset."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):  # the manager went away: readiness is advisory
            self._sock.sendto("\n".join(lines).encode(), self.address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


class Readiness:
    """Observer: tells the service manager and the status file how the kernel is doing."""

    def __init__(self, plan: Plan, state_dir: Path, notify: SdNotify | None = None) -> None:
        self.plan = plan
        self.path = state_dir / STATUS_FILE
        self.notify = notify or SdNotify()
        self._top = set(plan.top_level)
        self._running: set[str] = set()
        self._state = ""
        self._lock = threading.Lock()
        self._watchdog = _watchdog_interval()
        self._stop_watchdog = threading.Event()
        self._write("starting")
        if not self._top:  # nothing to start: ready at once
            self._write("ready")
            self.notify.send("READY=1", "STATUS=ready")

    def step_event(self, event: StepEvent) -> None:
        if event.transition is Transition.STARTING:
            lines = [f"STATUS=starting {event.step} ({event.blueprint})"]
            timeout = self._start_timeout(event.step)
            if timeout:
                lines.append(f"EXTEND_TIMEOUT_USEC={int(timeout * 1_000_000)}")
            self.notify.send(*lines)
        elif event.transition is Transition.STOPPING:
            self.notify.send(f"STATUS=stopping {event.step} ({event.blueprint})")

    def blueprint_event(self, event: BlueprintEvent) -> None:
        if event.blueprint not in self._top:
            return
        with self._lock:
            if event.state is State.RUNNING:
                self._running.add(event.blueprint)
                ready = self._running == self._top and self._state != "ready"
            else:
                self._running.discard(event.blueprint)
                ready = False
            leaving = event.state is State.STOPPING and self._state in ("ready", "starting")
        if ready:
            self._write("ready")
            self.notify.send("READY=1", "STATUS=ready")
            if self._watchdog:
                threading.Thread(target=self._pet, name="bootkit-watchdog", daemon=True).start()
        elif leaving:
            self._stop_watchdog.set()
            self._write("stopping")
            self.notify.send("STOPPING=1", "STATUS=stopping")

    def child_restart(self, event: ChildRestart) -> None:
        self.notify.send(f"STATUS=restarting {event.blueprint}")

    def close(self) -> None:
        """The process is about to exit: say so."""
        self._stop_watchdog.set()
        self._write("stopped")
        self.notify.close()

    def _start_timeout(self, step: str) -> float | None:
        try:
            timeout: float | None = self.plan.step(step).cls.start_timeout
        except KeyError:
            return None
        return timeout

    def _pet(self) -> None:
        assert self._watchdog is not None
        while not self._stop_watchdog.wait(self._watchdog / 2):
            self.notify.send("WATCHDOG=1")

    def _write(self, state: str) -> None:
        with self._lock:
            self._state = state
            data = {"pid": os.getpid(), "state": state, "since": time.time()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(data).encode())
        except OSError:
            pass  # a read-only state folder must not stop the worker


def _watchdog_interval() -> float | None:
    """Seconds of ``WATCHDOG_USEC`` when it is meant for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 or None
    except ValueError:
        return None


def status(state_dir: Path) -> tuple[bool, str]:
    """(ready, one line) for the kernel whose status file is in `state_dir`."""
    path = state_dir / STATUS_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        pid, state, since = int(data["pid"]), str(data["state"]), float(data["since"])
    except FileNotFoundError:
        return False, f"not running: no {path}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unknown: cannot read {path}: {exc}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"not running: pid {pid} is gone (last state {state})"
    except PermissionError:
        pass  # alive, someone else's
    age = time.time() - since
    return state == "ready", f"{state} (pid {pid}, for {age:.1f}s)"
