"""Result backends by URL: ``redis://`` (Celery's format) and ``file://`` (the embedded default).

The file backend keeps one JSON file per task, in the same format as Redis values, so
``bootkit call --wait`` works next to a worker on the embedded broker with no server.
Waiting polls the file with a growing interval (at most 0.1 s): there is no
portable way to be told that a file appeared.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bootkit import ConfigError
from bootkit_amqp_consumer.errors import ResultTimeoutError
from bootkit_amqp_consumer.results import (
    KEY_PREFIX,
    READY_STATES,
    MetaStore,
    RedisBackend,
    ResultState,
    make_meta,
)


def open_backend(url: str) -> Any:
    """The backend for `url`.

    Raises:
        ConfigError: the scheme is not supported.
    """
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisBackend(url)
    if scheme == "file":
        return FileBackend(Path(urlparse(url).path))
    raise ConfigError(f"result backend {url!r}: use redis://HOST:PORT/DB or file:///PATH")


class FileBackend(MetaStore):
    """Results as files named like the Redis keys, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, task_id: str) -> Path:
        if "/" in task_id or task_id.startswith("."):
            raise ValueError(f"unsafe task id {task_id!r}")
        return self.folder / (KEY_PREFIX + task_id)

    def store(
        self,
        task_id: str,
        state: ResultState,
        result: Any = None,
        *,
        traceback: str | None = None,
        children: list[Any] | None = None,
    ) -> None:
        """Write the task's meta; a stored SUCCESS is never replaced."""
        path = self._path(task_id)
        if self.get_meta(task_id)["status"] == "SUCCESS":
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps(make_meta(task_id, state, result, traceback, children)), encoding="utf-8"
        )
        tmp.replace(path)

    def get_meta(self, task_id: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(self._path(task_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"status": "PENDING", "result": None}
        return meta

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """The task's meta once ready.

        Raises:
            ResultTimeoutError: not ready within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.005
        while True:
            meta = self.get_meta(task_id)
            if meta["status"] in READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(f"task {task_id} not ready within {timeout:g}s")
            time.sleep(
                interval
                if deadline is None
                else min(interval, max(0.0, deadline - time.monotonic()))
            )
            interval = min(interval * 2, 0.1)

    def forget(self, task_id: str) -> None:
        self._path(task_id).unlink(missing_ok=True)

    def close(self) -> None:
        pass
