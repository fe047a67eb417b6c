"""Readiness, told to the service manager (sd_notify) and kept for `bootkit status`.

`Readiness` is a kernel observer that `bootkit start` wires in:

- sd_notify, only when ``NOTIFY_SOCKET`` is set (a path, or ``@name`` for an abstract
  socket), one datagram per change, no systemd library needed:
  ``STATUS=starting <step> (<blueprint>)`` with ``EXTEND_TIMEOUT_USEC=<the step's
  start_timeout>`` as each step starts, so a slow step gets the time it declared
  (every step that has a limit sends it: systemd only ever moves the deadline later);
  ``READY=1`` once every top-level blueprint runs; ``STOPPING=1`` when shutdown begins,
  then ``STATUS=stopping <step> (<blueprint>)`` with ``EXTEND_TIMEOUT_USEC=<its
  stop_timeout>``; ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while running, when
  ``WATCHDOG_PID`` is unset or names this process. A child blueprint restarting while
  running shows in ``STATUS=`` only (``restarting consumer in 0.2s ...``, then
  ``ready`` again).
- ``<state_dir>/status.json``: ``{"pid", "started", "state": starting|ready|stopping|
  stopped, "since"}``, rewritten atomically at each change and read by `status`
  (`bootkit status`), which loads no plugin. ``started`` identifies the process beyond
  its pid (its start time in ``/proc``, where there is one), so a stale file whose pid
  was reused, say by the next container's pid 1, never reads as ready.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bootkit.events import BlueprintEvent, ChildRestart, State, StepEvent, Transition
from bootkit.log import logger
from bootkit.plan import Plan
from bootkit.record import write_atomically

STATUS_FILE = "status.json"


class SdNotify:
    """Datagrams to the service manager's socket; does nothing without an address."""

    def __init__(self, address: str = "") -> None:
        """`address`: the value of ``NOTIFY_SOCKET`` (``@`` starts an abstract name)."""
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        self._warned = False
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, *lines: str) -> None:
        """Send `lines` as one datagram; a manager that went away is logged once, not raised:
        readiness is advice, and must never stop the worker."""
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger().warning("sd_notify_failed", socket=self.address, error=str(exc))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds of ``WATCHDOG_USEC`` when the watchdog is meant for process `pid`, else None."""
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        return int(usec) / 1_000_000 or None
    except ValueError:
        return None


class Readiness:
    """Observer: tells the service manager and the status file how the kernel is doing.

    Built before the kernel (the status file says ``starting`` at once); then
    `kernel_starting` just before the kernel starts, `close` when the process exits.
    """

    def __init__(
        self,
        plan: Plan,
        state_dir: Path,
        notify: SdNotify | None = None,
        watchdog: float | None = None,
    ) -> None:
        # Each step's (start_timeout, stop_timeout), looked up on every step event.
        self._timeouts = {
            p.name: (p.cls.start_timeout, p.cls.stop_timeout) for p in plan.steps if p.enabled
        }
        self.path = state_dir / STATUS_FILE
        self.notify = notify or SdNotify()
        self._top = set(plan.top_level)
        self._running: set[str] = set()
        self._state = ""
        self._lock = threading.Lock()
        self._watchdog = watchdog
        self._stop_watchdog = threading.Event()
        self._write("starting")

    @classmethod
    def from_env(cls, plan: Plan, state_dir: Path, env: Mapping[str, str]) -> Readiness:
        """Readiness for the service manager that `env` (the process environment) names."""
        return cls(
            plan,
            state_dir,
            SdNotify(env.get("NOTIFY_SOCKET", "")),
            watchdog_interval(env, os.getpid()),
        )

    def kernel_starting(self) -> None:
        """The kernel is about to start, with SIGTERM handled: a plan with nothing to
        start is ready now (no blueprint will say so); otherwise wait for the events."""
        if not self._top:
            self._ready()

    def step_event(self, event: StepEvent) -> None:
        # While running (a child blueprint restarting) the service manager has no start
        # or stop timeout for EXTEND_TIMEOUT_USEC to move: STATUS alone says it.
        extend = self._state != "ready"
        if event.transition is Transition.STARTING:
            lines = [f"STATUS=starting {event.step} ({event.blueprint})"]
            if extend:
                lines += _extend(self._timeouts.get(event.step, (None, None))[0])
            self.notify.send(*lines)
        elif event.transition is Transition.STOPPING:
            lines = [f"STATUS=stopping {event.step} ({event.blueprint})"]
            if extend:
                lines += _extend(self._timeouts.get(event.step, (None, None))[1])
            self.notify.send(*lines)

    def blueprint_event(self, event: BlueprintEvent) -> None:
        if event.blueprint not in self._top:
            if event.state is State.RUNNING and self._state == "ready":
                self.notify.send("STATUS=ready")  # a child blueprint is back after a restart
            return
        with self._lock:
            if event.state is State.RUNNING:
                self._running.add(event.blueprint)
            else:
                self._running.discard(event.blueprint)
            ready = self._running == self._top and self._state == "starting"
            leaving = event.state is State.STOPPING and self._state in ("starting", "ready")
        if ready:
            self._ready()
        elif leaving:
            self._stopping()

    def child_restart(self, event: ChildRestart) -> None:
        cause = " ".join(f"{type(event.cause).__name__}: {event.cause}".split())
        self.notify.send(
            f"STATUS=restarting {event.blueprint} in {event.delay:g}s "
            f"(attempt {event.attempt}): {cause}"
        )

    def close(self) -> None:
        """The process is about to exit: say so (``STOPPING=1`` too, if not yet said)."""
        if self._state in ("starting", "ready"):
            self._stopping()
        self._stop_watchdog.set()
        self._write("stopped")
        self.notify.close()

    def _ready(self) -> None:
        self._write("ready")
        self.notify.send("READY=1", "STATUS=ready")
        logger().debug("readiness", state="ready", watchdog=self._watchdog)
        if self._watchdog:
            threading.Thread(target=self._pet, name="bootkit-watchdog", daemon=True).start()

    def _stopping(self) -> None:
        self._stop_watchdog.set()
        self._write("stopping")
        self.notify.send("STOPPING=1", "STATUS=stopping")
        logger().debug("readiness", state="stopping")

    def _pet(self) -> None:
        assert self._watchdog is not None
        while not self._stop_watchdog.wait(self._watchdog / 2):
            self.notify.send("WATCHDOG=1")

    def _write(self, state: str) -> None:
        pid = os.getpid()
        with self._lock:
            self._state = state
            data = {"pid": pid, "started": _started(pid), "state": state, "since": time.time()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(data).encode())
        except OSError as exc:  # a read-only state folder must not stop the worker
            logger().warning("status_file_failed", path=str(self.path), error=str(exc))


def _extend(seconds: float | None) -> list[str]:
    return [f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}"] if seconds else []


def _started(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (``/proc/PID/stat`` field
    22), or None where there is no ``/proc``: with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


def status(state_dir: Path) -> tuple[bool, str]:
    """(ready, one line) for the kernel whose status file is in `state_dir`: ready only
    when that process is alive and said it was ready."""
    path = state_dir / STATUS_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        pid, state, since = int(data["pid"]), str(data["state"]), float(data["since"])
        started = data.get("started")
    except FileNotFoundError:
        return False, f"not running: no {path} (no `bootkit start` with this state folder)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return False, f"unknown: cannot read {path}: {exc}"
    gone = f"not running: pid {pid} is gone (last state {state})"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, gone
    except PermissionError:
        pass  # alive, someone else's
    if started is not None and _started(pid) not in (None, started):
        return False, gone + "; another process has that pid now"
    age = time.time() - since
    return state == "ready", f"{state} (pid {pid}, for {age:.1f}s)"
