"""``statedb.file``: load the worker's persistent state, and write it on every change.

File format (JSON)::

    {"version": 1, "clock": 42, "revoked": {"<task id>": <unix time revoked>, ...}}
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, ClassVar

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
from bootkit_amqp_consumer.state import WorkerState

DEBOUNCE = 0.05  # seconds between a change and its write: a burst of revokes, one write


def read(path: Path) -> dict[str, Any] | None:
    """The saved state, None when there is none yet. Raises: ConfigError when unreadable."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--statedb {path}: cannot read it: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("revoked", {}), dict):
        raise ConfigError(f"--statedb {path}: not a bootkit state file")
    return data


class StateDB(Step):
    """Keeps revoked ids and the Lamport clock in ``--statedb PATH``."""

    name = "statedb.file"
    blueprint = "worker"
    requires = ("amqp.app",)
    before = ("amqp.consumer",)  # loaded before any task message is seen
    stop_timeout: ClassVar[float | None] = 10.0

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        if not settings.option("statedb"):
            return Condition.off("statedb is not set")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        self.path = Path(ctx.settings.option("statedb")).expanduser().absolute()
        self.state = ctx.get(WorkerState)
        self.log = logger().bind(statedb=str(self.path))
        saved = read(self.path)
        if saved is not None:
            revoked = saved.get("revoked", {})
            loaded = self.state.merge_revoked({k: [v, k] for k, v in revoked.items()})
            self.state.clock.adjust(saved.get("clock"))
            self.log.info("statedb_loaded", revoked=loaded, clock=self.state.clock.value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self.state.on_change.append(self._dirty.set)
        self._writer = threading.Thread(
            target=self._write_loop, name="bootkit-statedb", daemon=True
        )
        self._writer.start()
        self.save()

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.state.on_change.remove(self._dirty.set)
        self._stopping.set()
        self._dirty.set()
        self._writer.join()
        self.save()

    def save(self) -> None:
        with self.state.lock:
            revoked = dict(self.state.revoked)
        data = {"version": 1, "clock": self.state.clock.value, "revoked": revoked}
        write_atomically(self.path, json.dumps(data).encode())
        self.log.debug("statedb_saved", revoked=len(revoked))

    def _write_loop(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait()
            if self._stopping.is_set():
                return
            self._stopping.wait(DEBOUNCE)
            self._dirty.clear()
            try:
                self.save()
            except OSError as exc:  # a full disk must not kill the worker; say so
                self.log.error("statedb_save_failed", error=str(exc))
