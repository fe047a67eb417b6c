"""What the worker's end-to-end tests share: brokers, worker subprocesses, deadlines.

Each test has its own queue on a shared test vhost (RabbitMQ) or db (Redis), so runs
never collide; results go to Redis db 9.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import pytest
from kombu.connection import Connection
from kombu.messaging import Consumer

from bootkit_amqp_consumer.events import event_queue
from tests.support import IN_CI, Service, cli_env

TESTS = Path(__file__).resolve().parent
VHOST = "bootkit-test"
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
REDIS_BROKER_URL = "redis://127.0.0.1:6379/10"
RESULTS_URL = "redis://127.0.0.1:6379/9"
WAIT = 20.0  # seconds any single wait may take before the test counts as hung

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"no {what} within {timeout:g}s (last: {value!r})")
        time.sleep(0.02)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Broker:
    """A broker the tests run against: ``rabbitmq`` or ``redis``."""

    kind: str
    url: str

    def connection(self) -> Any:
        return Connection(self.url, connect_timeout=4)

    def depth(self, queue: str) -> int:
        """Messages ready in `queue` (not those a consumer holds unacknowledged)."""
        with self.connection() as conn:
            try:
                _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
            except conn.channel_errors:
                if self.kind == "redis":
                    return 0  # kombu's Redis queue is a list: gone once empty
                raise
        return int(count)

    def publish_raw(
        self,
        queue: str,
        body: bytes,
        *,
        content_type: str | None,
        content_encoding: str | None,
        headers: Mapping[str, Any] | None,
    ) -> None:
        """Publish `body` as it is to `queue`, with no serializer in the way."""
        with self.connection() as conn:
            conn.Producer().publish(
                body,
                exchange="",
                routing_key=queue,
                content_type=content_type,
                content_encoding=content_encoding,
                headers=dict(headers) if headers is not None else None,
                delivery_mode=2,
                retry=True,
            )

    def delete(self, queue: str) -> None:
        """Remove `queue` and the direct exchange of the same name the worker declares."""
        with self.connection() as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            if self.kind == "rabbitmq":
                channel.exchange_delete(queue)

    def check(self) -> None:
        """Connect once. Raises: the transport's error when unreachable."""
        with self.connection() as conn:
            conn.connect()


class StartWorker(Protocol):
    """The `start_worker` fixture: start a worker on the test's broker and queue."""

    def __call__(self, *extra: str, pool: str = "threads", concurrency: int = 2) -> Service: ...


# The worker's own plugins: what `bootkit start` runs by default from this workspace.
WORKER_PLUGINS = ("amqp", "heartbeat", "gossip", "metrics", "statedb", "autoscale", "beat")


def worker_env(
    tmp_path: Path, name: str, plugins: tuple[str, ...] = WORKER_PLUGINS
) -> dict[str, str]:
    """Environment for a worker: its own state folder, the e2e tasks importable, and of
    the installed bootkit plugins only `plugins`, so the test sees only the worker's."""
    env = cli_env(tmp_path, sites=[TESTS])
    env["BOOTKIT_STATE_DIR"] = str(tmp_path / f"state-{name}")
    others = [f"no:{ep.name}" for ep in entry_points(group="bootkit") if ep.name not in plugins]
    env.pop("BOOTKIT_PLUGINS", None)
    if others:
        env["BOOTKIT_PLUGINS"] = ",".join(others)
    return env


def run_bootkit(tmp_path: Path, *args: str, name: str = "cli") -> subprocess.CompletedProcess[str]:
    """``python -m bootkit ARGS`` in a worker's environment (see `worker_env`), to the end."""
    return subprocess.run(
        [sys.executable, "-m", "bootkit", *args],
        env=worker_env(tmp_path, name),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def start_refused(tmp_path: Path, *args: str) -> str:
    """Run ``bootkit start`` with `args`, which it must refuse (exit 1): its error line."""
    done = run_bootkit(tmp_path, "start", *args, name="refused")
    assert done.returncode == 1, done.stderr
    return done.stderr.splitlines()[-1]


def launch(
    tmp_path: Path,
    broker: Broker,
    queue: str,
    *extra: str,
    pool: str = "threads",
    concurrency: int = 2,
    name: str = "worker",
) -> Service:
    """Start ``bootkit start -A e2e_tasks:app`` on `queue` and wait until it is ready;
    `pool` "prefork" is ``-P prefork --prefork-intake parent``, "prefork-children" is
    ``-P prefork --prefork-intake children``."""
    if pool in ("prefork", "prefork-children"):
        intake = "children" if pool == "prefork-children" else "parent"
        pool, extra = "prefork", ("--prefork-intake", intake, *extra)
    args = ["-A", "e2e_tasks:app", "-P", pool, "--broker", broker.url]
    args += ["--result-backend", RESULTS_URL, "-Q", queue]
    if pool != "solo":
        args += ["-c", str(concurrency)]
    service = Service([*args, *extra], cwd=tmp_path, env=worker_env(tmp_path, name))
    try:
        service.wait_for_event("kernel_ready", timeout=WAIT)
    except BaseException:
        service.__exit__(None, None, None)
        raise
    return service


def events(service: Service, name: str, **fields: Any) -> list[dict[str, Any]]:
    """The log events `name` printed so far whose fields include `fields`."""
    return [
        e
        for e in service.events()
        if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
    ]


def wait_for_events(service: Service, name: str, count: int, **fields: Any) -> list[dict[str, Any]]:
    """The log events `name` with `fields`, once there are exactly `count` of them."""

    def exactly() -> list[dict[str, Any]]:
        found = events(service, name, **fields)
        return found if len(found) == count else []

    try:
        return wait_until(exactly, f"{count} {name} event(s) with {fields}")
    except pytest.fail.Exception:  # say how many there were, and which
        found = events(service, name, **fields)
        pytest.fail(f"{len(found)} {name} event(s) with {fields} in the log, not {count}: {found}")


def stop(service: Service, timeout: float = WAIT) -> int:
    """Warm-stop a worker and return its exit status; kill it if it hangs."""
    if service.proc.poll() is None:
        service.signal(signal.SIGTERM)
    try:
        return service.wait(timeout)
    except subprocess.TimeoutExpired:
        service.proc.kill()
        service.wait(timeout)
        pytest.fail(f"worker {service.proc.pid} did not stop within {timeout:g}s of SIGTERM")


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = WAIT) -> None:
    """Wait for process `pid` to end; fail the test if it outlives `timeout`."""
    wait_until(lambda: not alive(pid), f"the end of process {pid}", timeout)


def broker_unreachable(kind: str, exc: BaseException) -> NoReturn:
    """Skip a test for a missing broker, or fail it under CI (which starts both)."""
    message = f"{kind} is not reachable for the worker's end-to-end tests: {exc}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class Monitor:
    """A monitor's queue bound to ``#`` on celeryev; collects the events it receives."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.events: list[dict[str, Any]] = []
        self.keys: list[str] = []
        queue = event_queue(connection, f"celeryev.{uuid.uuid4().hex}", "#")
        self.channel = connection.channel()
        self.consumer = Consumer(self.channel, [queue], on_message=self._on, no_ack=True)
        self.consumer.consume()
        # Redis subscribes to a fanout on the first wait, not at consume(): wait once now,
        # or events published before the test first waits would never reach us.
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.05)

    def _on(self, message: Any) -> None:
        body = message.decode()
        self.keys.append(message.delivery_info["routing_key"])
        self.events.extend(body if isinstance(body, list) else [body])

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition(self.events):
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {WAIT}s; got {self.events}")
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=0.1)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]
