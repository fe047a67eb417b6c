"""Task results in Redis, in Celery's format, and the client's `AsyncResult` to read them.

A result is the JSON meta Celery 5.7 writes under ``celery-task-meta-<task_id>``
(``status``, ``result``, ``traceback``, ``children``, ``date_done``, ``task_id``), kept
for `expires` seconds and published on the channel of the same name, so a Celery
client and this one can read each other's results.
"""

from __future__ import annotations

import builtins
import json
import math
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bootkit_amqp_consumer.errors import ResultTimeoutError, TaskFailedError, TaskRevokedError
from bootkit_amqp_consumer.job import Outcome

if TYPE_CHECKING:  # imported when a Redis backend is made: a worker without one never does
    import redis
    from redis.client import PubSub

ResultState = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
PROPAGATE_STATES = frozenset({"FAILURE", "REVOKED"})
KEY_PREFIX = "celery-task-meta-"
# Store a result in one round trip, atomically: leave a stored SUCCESS alone, else
# write the meta with its expiry and publish it on the key's channel.
_STORE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


def make_meta(
    task_id: str, state: str, result: Any, traceback: str | None, children: list[Any] | None
) -> dict[str, Any]:
    """A task's meta in Celery's format and field order."""
    return {
        "status": state,
        "result": result,
        "traceback": traceback,
        "children": children,
        "date_done": datetime.now(UTC).isoformat() if state in READY_STATES else None,
        "task_id": task_id,
    }


class MetaStore:
    """What every backend derives from its `store`: outcomes and states in Celery's terms."""

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
        raise NotImplementedError

    def get_meta(self, task_id: str) -> dict[str, Any]:
        """The stored meta, PENDING when there is none."""
        raise NotImplementedError

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """The meta once ready. Raises: ResultTimeoutError."""
        raise NotImplementedError

    def store_outcome(self, outcome: Outcome) -> None:
        """Store how a job ended: its value, its exception with traceback, or a retry."""
        if outcome.state == "SUCCESS":
            self.store(outcome.job_id, "SUCCESS", outcome.result)
            return
        error = None  # Celery stores a retry without an exception as None
        if outcome.exc_type is not None or outcome.state == "FAILURE":
            error = exception_meta(
                outcome.exc_type or "Exception",
                outcome.exc_module or "builtins",
                outcome.exc_message,
            )
        self.store(outcome.job_id, outcome.state, error, traceback=outcome.traceback)

    def store_state(
        self,
        task_id: str,
        state: Literal["STARTED", "REVOKED"],
        *,
        reason: str = "revoked",
        info: dict[str, Any] | None = None,
    ) -> None:
        """Mark a task STARTED (result `info`, Celery's worker writes pid and hostname) or REVOKED.

        A revoked task's result is Celery's ``TaskRevokedError(reason)``; Celery's
        worker uses the reasons ``revoked``, ``expired`` and ``terminated``.
        """
        if state == "STARTED":
            self.store(task_id, "STARTED", info)
        else:
            self.store(
                task_id, "REVOKED", exception_meta("TaskRevokedError", "celery.exceptions", reason)
            )


class RedisBackend(MetaStore):
    """Stores and reads task results; one pooled client, safe to share between threads."""

    def __init__(self, url: str, *, expires: float = 86400.0) -> None:
        if expires <= 0:
            raise ValueError(f"result expires must be positive seconds, got {expires!r}")
        import redis

        self._client: redis.Redis = redis.Redis.from_url(url)
        self._expires = math.ceil(expires)  # SET's EX takes whole seconds
        self._store = self._client.register_script(_STORE)  # EVALSHA, loaded on first use

    def store(
        self,
        task_id: str,
        state: ResultState,
        result: Any = None,
        *,
        traceback: str | None = None,
        children: list[Any] | None = None,
    ) -> None:
        """Write the task's meta with expiry and publish it; a stored SUCCESS is never replaced.

        As in Celery, a success is final: a redelivered copy of the task must not undo it.

        Raises:
            TypeError: `result` or `children` is not JSON-serialisable.
        """
        payload = json.dumps(make_meta(task_id, state, result, traceback, children))
        self._store(keys=[KEY_PREFIX + task_id], args=[payload, self._expires])

    def get_meta(self, task_id: str) -> dict[str, Any]:
        """Return the stored meta; ``{"status": "PENDING", "result": None}`` if there is none."""
        raw = self._client.get(KEY_PREFIX + task_id)
        if raw is None:
            return {"status": "PENDING", "result": None}
        meta: dict[str, Any] = json.loads(raw)
        return meta

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        """Return the task's meta once it is ready (SUCCESS, FAILURE or REVOKED).

        Blocks on the key's pub/sub channel; `timeout` None waits for ever.

        Raises:
            ResultTimeoutError: not ready within `timeout` seconds.
        """
        key = KEY_PREFIX + task_id
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._client.pubsub() as pubsub:  # type: ignore[no-untyped-call]  # redis-py
            pubsub.subscribe(key)
            # Read the key only once Redis has confirmed the subscription: a result
            # stored before that is in the key, one stored after it is published to us.
            _next_message(pubsub, "subscribe", deadline, task_id, timeout)
            meta = self.get_meta(task_id)
            while meta["status"] not in READY_STATES:
                message = _next_message(pubsub, "message", deadline, task_id, timeout)
                meta = json.loads(message["data"])
        return meta

    def forget(self, task_id: str) -> None:
        """Delete the task's result."""
        self._client.delete(KEY_PREFIX + task_id)

    def close(self) -> None:
        """Close the pooled connections; call once, when the worker or client shuts down."""
        self._client.close()


class AsyncResult:
    """A client's handle on one task's result, read from `backend` (Celery's API, subset)."""

    def __init__(self, task_id: str, backend: MetaStore) -> None:
        self.id = task_id
        self.backend = backend
        self._ready_meta: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    @property
    def state(self) -> str:
        """The task's state now: PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return str(self._meta()["status"])

    def ready(self) -> bool:
        """True once the task succeeded, failed or was revoked."""
        return self.state in READY_STATES

    def successful(self) -> bool:
        """True if the task returned a value."""
        return self.state == "SUCCESS"

    def failed(self) -> bool:
        """True if the task raised."""
        return self.state == "FAILURE"

    @property
    def result(self) -> Any:
        """The return value, or the exception for a failed, retrying or revoked task."""
        return self._value(self._meta())

    @property
    def traceback(self) -> str | None:
        """The worker's traceback of a failure or retry, else None."""
        traceback: str | None = self._meta().get("traceback")
        return traceback

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> Any:
        """Wait for the task to be ready and return its value.

        With `propagate` False a failure's exception is returned instead of raised.

        Raises:
            ResultTimeoutError: not ready within `timeout` seconds.
            TaskRevokedError: the task was revoked.
            Exception: the task's exception when its class is builtin or already imported
                here, else `TaskFailedError`.
        """
        meta = self._meta()
        if meta["status"] not in READY_STATES:
            meta = self._ready_meta = self.backend.wait(self.id, timeout)
        value = self._value(meta)
        if propagate and meta["status"] in PROPAGATE_STATES:
            raise value
        return value

    def _meta(self) -> dict[str, Any]:
        if self._ready_meta is not None:
            return self._ready_meta
        meta = self.backend.get_meta(self.id)
        if meta["status"] in READY_STATES:
            self._ready_meta = meta
        return meta

    def _value(self, meta: dict[str, Any]) -> Any:
        result = meta.get("result")
        state = meta["status"]
        if state in PROPAGATE_STATES or (state == "RETRY" and isinstance(result, dict)):
            error = result if isinstance(result, dict) else {"exc_message": [result]}
            return _rebuild_exception(self.id, state, error, meta.get("traceback"))
        return result


def exception_meta(exc_type: str, exc_module: str, message: str | None) -> dict[str, Any]:
    """Celery's JSON form of an exception; its arguments were ``(message,)``."""
    return {
        "exc_type": exc_type,
        "exc_message": [] if message is None else [message],
        "exc_module": exc_module,
    }


def _rebuild_exception(
    task_id: str, state: str, error: dict[str, Any], traceback: str | None
) -> Exception:
    """Turn Celery's JSON exception back into an exception, importing and unpickling nothing."""
    exc_type = str(error.get("exc_type") or "Exception")
    exc_module = str(error.get("exc_module") or "builtins")
    raw_args = error.get("exc_message", [])
    args = tuple(raw_args) if isinstance(raw_args, list) else (raw_args,)
    if state == "REVOKED":
        exc: Exception = TaskRevokedError(*args)
    else:
        exc = _loaded_exception(exc_module, exc_type, args) or TaskFailedError(
            task_id, exc_type, exc_module, str(Exception(*args)), traceback
        )
    if traceback:
        exc.add_note(f"Remote traceback of task {task_id}:\n{traceback}")
    return exc


def _loaded_exception(module_name: str, qualname: str, args: tuple[Any, ...]) -> Exception | None:
    """The exception, if its class is builtin or in an imported module and takes `args`."""
    # Dictionary lookups only: no import, and no module __getattr__ that might import.
    found: object = builtins if module_name == "builtins" else sys.modules.get(module_name)
    for name in qualname.split("."):
        found = vars(found).get(name) if hasattr(found, "__dict__") else None
    if not (isinstance(found, type) and issubclass(found, Exception)):
        return None  # BaseException-only classes (SystemExit, ...) are never raised here
    try:
        return found(*args)
    except Exception:  # an __init__ that wants other arguments
        return None


def _next_message(
    pubsub: PubSub,
    kind: Literal["subscribe", "message"],
    deadline: float | None,
    task_id: str,
    timeout: float | None,
) -> dict[str, Any]:
    """Block until the next pub/sub message of `kind`, or raise at the deadline."""
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        message: dict[str, Any] | None
        # redis-py documents timeout=None as "block until a message"; its hint omits None.
        message = pubsub.get_message(timeout=remaining)  # type: ignore[arg-type]
        if message is not None and message["type"] == kind:
            return message
        if remaining == 0.0:
            raise ResultTimeoutError(
                f"task {task_id} had no result within {timeout:g}s; wait longer, "
                "or check that a worker consumes the task's queue"
            )
