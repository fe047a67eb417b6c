"""bootkit-pidfile: one `bootkit start` per state folder, and an optional /healthz endpoint.

Steps (blueprint ``service``):
    pidfile.lock    writes ``<state_dir>/bootkit.pid`` and holds an exclusive lock on it
    pidfile.health  answers ``GET /healthz`` on 127.0.0.1:``health_port`` (only when set)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bootkit import Condition, Context, Option, Settings, Step, StopReason, hookimpl

PID_FILE = "bootkit.pid"


class PidFileLockedError(RuntimeError):
    """Another process holds the pid file of this state folder."""


class PidFile(Step):
    """Writes this process's pid to the state folder and keeps it locked while running."""

    name = "pidfile.lock"
    blueprint = "service"

    def start(self, ctx: Context) -> None:
        self.path = ctx.settings.state_dir / PID_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = _lock(self.path)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def stop(self, ctx: Context, reason: StopReason) -> None:
        # Remove the file while still holding the lock, so nobody reads a stale pid.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)


def _lock(path: Path) -> int:
    """Open `path` and lock it exclusively; return the descriptor.

    Raises:
        PidFileLockedError: another process holds the lock.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PidFileLockedError(
                f"{path} is locked by pid {holder}; another bootkit runs with this state "
                "folder: stop it or pass a different --state-dir"
            ) from None
        # The previous holder may have removed the file between our open and our lock;
        # then we hold a lock on a file nobody can see, so try again with a fresh one.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


class Health(Step):
    """Serves ``GET /healthz`` -> 200 while the service runs."""

    name = "pidfile.health"
    blueprint = "service"
    requires = ("pidfile.lock",)

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        if settings.option("health_port") is None:
            return Condition.off("health_port is not set")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        # The constructor binds and listens, so the port answers once start returns.
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", ctx.settings.option("health_port")), _Healthz
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="pidfile-health", daemon=True
        )
        self.thread.start()

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/healthz":
            self.send_error(404)
            return
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep stderr for bootkit's events: probes every second would drown them."""


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    return [PidFile, Health]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option("health_port", "Serve GET /healthz on 127.0.0.1:PORT.", type=int, metavar="PORT")
    ]
