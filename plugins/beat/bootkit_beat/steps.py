"""``beat.scheduler``: publishes periodic tasks when due, from one worker of the cluster.

Only the worker holding the beat lock publishes; the others wait to take it over. The
lock lives in the broker, so it needs nothing else: on AMQP an exclusive queue (the
broker drops it, and so frees the lock, the moment its holder's connection dies); on
Redis a key set with NX and a 10 s expiry, renewed every 2 s; on the embedded
filesystem broker a file lock in the state folder. (Gossip's election was the other
way; it depends on gossip being on and on every worker's heartbeat, where a lock needs
only the broker every worker already has.)

Each entry's last run is written (atomically) right after its task is sent: a restart
resumes each schedule from its last run, so a due run is neither skipped nor repeated;
a crash between sending and writing may repeat that one run (at least once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bootkit import (
    Condition,
    ConfigError,
    Context,
    Settings,
    Step,
    StopReason,
    logger,
    write_atomically,
)
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_beat.schedules import Entry, ScheduleError, parse_entry, schedule_of

LOCK_NAME = "bootkit.beat.lock"
LOCK_TTL_MS = 10_000
RETRY = 1.0  # seconds between tries to take the lock


class Lock(Protocol):
    def acquire(self) -> bool: ...

    def held(self) -> bool: ...

    def release(self) -> None: ...


class AmqpLock:
    """An exclusive queue: one connection may declare it; it goes when that one dies."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.connection: Any = None

    def acquire(self) -> bool:
        from kombu.connection import Connection

        connection = Connection(self.config.broker, heartbeat=10, connect_timeout=4)
        try:
            connection.connect()
            connection.default_channel.queue_declare(LOCK_NAME, exclusive=True, auto_delete=True)
        except Exception:
            with contextlib.suppress(Exception):
                connection.release()
            return False
        self.connection = connection
        return True

    def held(self) -> bool:
        if self.connection is None:
            return False
        try:
            self.connection.heartbeat_check()
            self.connection.drain_events(timeout=0)
        except TimeoutError:
            return True
        except Exception:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.release()
            self.connection = None


class RedisLock:
    """A key with an expiry, renewed while held; gone within LOCK_TTL_MS of a crash."""

    RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"

    def __init__(self, config: WorkerConfig) -> None:
        import redis

        self.client = redis.Redis.from_url(config.broker, socket_timeout=4)
        self.token = f"{config.hostname}:{time.time()}"
        self.renewed = 0.0
        self.mine = False

    def acquire(self) -> bool:
        try:
            self.mine = bool(self.client.set(LOCK_NAME, self.token, nx=True, px=LOCK_TTL_MS))
        except Exception:
            self.mine = False
        self.renewed = time.monotonic()
        return self.mine

    def held(self) -> bool:
        if self.mine and time.monotonic() - self.renewed > 2.0:
            try:
                self.mine = bool(
                    self.client.eval(self.RENEW, 1, LOCK_NAME, self.token, LOCK_TTL_MS)
                )
            except Exception:
                self.mine = False
            self.renewed = time.monotonic()
        return self.mine

    def release(self) -> None:
        if self.mine:
            with contextlib.suppress(Exception):
                self.client.eval(
                    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end",
                    1,
                    LOCK_NAME,
                    self.token,
                )
        self.mine = False
        self.client.close()


class FileLock:
    """flock on a file in the state folder: for the embedded broker, one machine."""

    def __init__(self, config: WorkerConfig) -> None:
        self.path = config.state_dir / "beat.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        import os

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        import os

        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_for(config: WorkerConfig) -> Lock:
    scheme = config.broker.split("://", 1)[0]
    if scheme in ("amqp", "pyamqp", "amqps"):
        return AmqpLock(config)
    if scheme in ("redis", "rediss"):
        return RedisLock(config)
    return FileLock(config)


def entries(settings: Settings, app: App) -> list[Entry]:
    """The schedule: the config's ``beat_schedule`` lines, then the app's periodic tasks.

    Raises: ConfigError on a line or schedule that does not parse, or a name used twice.
    """
    found: list[Entry] = []
    try:
        found += [parse_entry(line) for line in settings.option("beat_schedule", ())]
        found += [
            Entry(name, schedule_of(spec), task, tuple(args), dict(kwargs))
            for name, spec, task, args, kwargs in app.periodic
        ]
    except ScheduleError as exc:
        raise ConfigError(str(exc)) from None
    names = [e.name for e in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"beat schedule: the name {twice[0]!r} is used twice")
    return found


class Scheduler:
    """Sends each entry's task when due, while it holds the lock."""

    def __init__(
        self, schedule: list[Entry], app: App, lock: Lock, state_path: Path, log: Any
    ) -> None:
        self.schedule = schedule
        self.app = app
        self.lock = lock
        self.state_path = state_path
        self.log = log
        self.last: dict[str, float] = self._load()
        self.began = datetime.now(UTC)  # entries never run count their first period from here
        self.stopping = threading.Event()
        self.leader = False

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--beat-state {self.state_path}: cannot read it: {exc}") from None
        runs = data.get("last_run") if isinstance(data, dict) else None
        return {k: float(v) for k, v in (runs or {}).items() if isinstance(v, int | float)}

    def _save(self) -> None:
        data = {"version": 1, "last_run": self.last}
        write_atomically(self.state_path, json.dumps(data).encode())

    def next_runs(self) -> dict[str, datetime]:
        """When each entry is next due: after its last run, or one period after start."""
        due = {}
        for entry in self.schedule:
            last = self.last.get(entry.name)
            base = datetime.fromtimestamp(last, UTC) if last is not None else self.began
            due[entry.name] = entry.schedule.next_after(base)
        return due

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self.lock.held():
                if self.leader:
                    self.log.warning("beat_lock_lost")
                    self.leader = False
                if not self.lock.acquire():
                    self.stopping.wait(RETRY)
                    continue
                self.leader = True
                self.log.info("beat_leading", entries=[e.name for e in self.schedule])
            now = datetime.now(UTC)
            due = self.next_runs()
            for entry in self.schedule:
                if due[entry.name] <= now:
                    self._send(entry, now)
            due = self.next_runs()
            soonest = min(due.values(), default=None)
            wait = RETRY if soonest is None else (soonest - datetime.now(UTC)).total_seconds()
            self.stopping.wait(max(0.0, min(wait, RETRY)))

    def _send(self, entry: Entry, now: datetime) -> None:
        try:
            result = self.app.send_task(entry.task, list(entry.args), entry.kwargs or {})
        except Exception as exc:  # the broker is down: try again next time round
            self.log.error(
                "beat_send_failed", entry=entry.name, error=f"{type(exc).__name__}: {exc}"
            )
            return
        self.last[entry.name] = now.timestamp()
        self._save()
        self.log.info("beat_sent", entry=entry.name, task=entry.task, task_id=result.id)


class Beat(Step):
    """Runs the periodic task scheduler (``-B``/``--beat``)."""

    name = "beat.scheduler"
    blueprint = "worker"
    requires = ("amqp.app",)
    stop_timeout: ClassVar[float | None] = 10.0

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        if not settings.option("beat"):
            return Condition.off("beat is off (-B turns it on)")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        config = ctx.get(WorkerConfig)
        worker_app = ctx.get(App)
        schedule = entries(ctx.settings, worker_app)
        app = App("bootkit-beat", default_queue=config.queues[0])  # a connection of its own
        app.configure(
            broker=config.broker, result_backend=None, transport_options=config.transport_options
        )
        state = ctx.settings.option("beat_state") or config.state_dir / "beat-state.json"
        path = Path(state).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        log = logger().bind(hostname=config.hostname)
        self.app = app
        self.scheduler = Scheduler(schedule, app, lock_for(config), path, log)
        self.thread = threading.Thread(target=self._run, name="bootkit-beat", daemon=True)
        self.thread.start()
        log.info("beat_started", entries=[f"{e.name}: {e.schedule} -> {e.task}" for e in schedule])

    def _run(self) -> None:
        try:
            self.scheduler.run()
        except Exception:
            self.scheduler.log.exception("beat_failed")

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.scheduler.stopping.set()
        self.thread.join()
        self.scheduler.lock.release()
        self.app.close()
