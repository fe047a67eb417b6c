"""RedisBackend and AsyncResult against a real Redis (db 9) and the real Celery 5.7 client."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import celery  # type: ignore[import-untyped, unused-ignore]  # celery ships no types
import celery.exceptions  # type: ignore[import-untyped, unused-ignore]
import pytest
import redis

from bootkit_amqp_consumer.errors import ResultTimeoutError, TaskFailedError, TaskRevokedError
from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.results import KEY_PREFIX, AsyncResult, RedisBackend
from tests.support import IN_CI

URL = "redis://127.0.0.1:6379/9"
WAIT = 5.0  # seconds any wait in these tests may take before it counts as hung


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A plain client on db 9; skips without Redis, but fails under CI (which starts it)."""
    client = redis.Redis.from_url(URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        if IN_CI:
            pytest.fail(f"Redis must run on {URL} under CI: {exc}")
        pytest.skip(f"no Redis on {URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def task_id(redis_client: redis.Redis) -> Iterator[str]:
    """A fresh task id; its result is deleted afterwards."""
    tid = f"test-results-{uuid.uuid4()}"
    yield tid
    redis_client.delete(KEY_PREFIX + tid)


@pytest.fixture
def backend(redis_client: redis.Redis) -> Iterator[RedisBackend]:
    backend = RedisBackend(URL)
    yield backend
    backend.close()


@pytest.fixture
def celery_app(redis_client: redis.Redis) -> Iterator[celery.Celery]:
    app = celery.Celery("test_results", backend=URL, set_as_current=False)
    yield app
    app.backend.result_consumer.stop()
    app.close()


def failure(task_id: str, exc_type: str, exc_module: str, message: str) -> Outcome:
    return Outcome(
        job_id=task_id,
        state="FAILURE",
        exc_type=exc_type,
        exc_module=exc_module,
        exc_message=message,
        traceback="Traceback (most recent call last):\n  ...\n",
    )


def store_after_read(task_id: str, store: Callable[[], None]) -> threading.Thread:
    """Start a thread that calls `store` once some client has read the task's key.

    Redis MONITOR pushes every command it runs, so the waiter's read is known to have
    returned nothing and the result can only reach the waiter through pub/sub.
    """
    client = redis.Redis.from_url(URL, socket_timeout=WAIT)
    monitor = client.monitor()  # type: ignore[no-untyped-call]  # redis-py
    monitor.__enter__()  # MONITOR is active once this returns
    read = f"GET {KEY_PREFIX}{task_id}"

    def run() -> None:
        try:
            while monitor.next_command()["command"] != read:
                pass
            store()
        finally:
            monitor.__exit__()
            client.close()

    thread = threading.Thread(target=run, name="store-after-read", daemon=True)
    thread.start()
    return thread


def test_success_round_trips(backend: RedisBackend, task_id: str) -> None:
    backend.store(task_id, "SUCCESS", {"a": [1, 2]})

    meta = backend.get_meta(task_id)
    result = AsyncResult(task_id, backend)
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"a": [1, 2]}
    assert meta["task_id"] == task_id
    assert (result.state, result.ready(), result.successful(), result.failed()) == (
        "SUCCESS",
        True,
        True,
        False,
    )
    assert result.get(timeout=WAIT) == {"a": [1, 2]}


def test_meta_has_celerys_fields_order_and_values(
    backend: RedisBackend, celery_app: celery.Celery, redis_client: redis.Redis, task_id: str
) -> None:
    celery_id = task_id + "-celery"
    celery_app.backend.store_result(celery_id, [1, "two"], "SUCCESS")
    backend.store(task_id, "SUCCESS", [1, "two"])
    try:
        theirs = json.loads(redis_client.get(KEY_PREFIX + celery_id) or b"")
    finally:
        redis_client.delete(KEY_PREFIX + celery_id)
    ours = json.loads(redis_client.get(KEY_PREFIX + task_id) or b"")

    assert (
        list(ours)
        == list(theirs)
        == [
            "status",
            "result",
            "traceback",
            "children",
            "date_done",
            "task_id",
        ]
    )
    assert {**ours, "date_done": None, "task_id": None} == {
        **theirs,
        "date_done": None,
        "task_id": None,
    }
    assert datetime.fromisoformat(ours["date_done"]).utcoffset() == UTC.utcoffset(None)


def test_failure_round_trips_with_traceback(backend: RedisBackend, task_id: str) -> None:
    backend.store_outcome(failure(task_id, "ValueError", "builtins", "bad input"))

    meta = backend.get_meta(task_id)
    result = AsyncResult(task_id, backend)
    assert meta["status"] == "FAILURE"
    assert meta["result"] == {
        "exc_type": "ValueError",
        "exc_message": ["bad input"],
        "exc_module": "builtins",
    }
    assert meta["date_done"] is not None
    assert result.failed()
    assert result.traceback == "Traceback (most recent call last):\n  ...\n"
    assert isinstance(result.result, ValueError)


def test_retry_is_stored_as_not_ready(backend: RedisBackend, task_id: str) -> None:
    backend.store_outcome(
        Outcome(
            job_id=task_id,
            state="RETRY",
            exc_type="KeyError",
            exc_module="builtins",
            exc_message="k",
            traceback="tb",
            countdown=3,
        )
    )

    meta = backend.get_meta(task_id)
    result = AsyncResult(task_id, backend)
    assert meta["status"] == "RETRY"
    assert meta["date_done"] is None
    assert meta["traceback"] == "tb"
    assert not result.ready()
    assert isinstance(result.result, KeyError)


def test_revoked_stores_celerys_revoked_error(backend: RedisBackend, task_id: str) -> None:
    backend.store_state(task_id, "REVOKED", reason="terminated")

    meta = backend.get_meta(task_id)
    assert meta["status"] == "REVOKED"
    assert meta["result"] == {
        "exc_type": "TaskRevokedError",
        "exc_message": ["terminated"],
        "exc_module": "celery.exceptions",
    }
    with pytest.raises(TaskRevokedError, match="terminated"):
        AsyncResult(task_id, backend).get(timeout=WAIT)


def test_started_stores_worker_info_and_no_date_done(backend: RedisBackend, task_id: str) -> None:
    backend.store_state(task_id, "STARTED", info={"pid": 7, "hostname": "w1@host"})

    meta = backend.get_meta(task_id)
    assert (meta["status"], meta["result"], meta["date_done"]) == (
        "STARTED",
        {"pid": 7, "hostname": "w1@host"},
        None,
    )


def test_a_stored_success_is_never_replaced(backend: RedisBackend, task_id: str) -> None:
    backend.store(task_id, "SUCCESS", 1)
    backend.store_state(task_id, "STARTED")

    assert backend.get_meta(task_id)["status"] == "SUCCESS"


def test_a_stored_success_is_not_published_again(
    backend: RedisBackend, redis_client: redis.Redis, task_id: str
) -> None:
    backend.store(task_id, "SUCCESS", 1)
    with redis_client.pubsub() as pubsub:  # type: ignore[no-untyped-call]
        pubsub.subscribe(KEY_PREFIX + task_id)
        assert pubsub.get_message(timeout=WAIT)["type"] == "subscribe"
        backend.store(task_id, "FAILURE", None)
        redis_client.publish(KEY_PREFIX + task_id, b"marker")  # what must come first
        message = pubsub.get_message(timeout=WAIT)

    assert message is not None
    assert message["data"] == b"marker"
    assert backend.get_meta(task_id)["result"] == 1


def test_a_key_that_holds_no_meta_is_overwritten(
    backend: RedisBackend, redis_client: redis.Redis, task_id: str
) -> None:
    redis_client.set(KEY_PREFIX + task_id, b"\xff not json")
    backend.store(task_id, "SUCCESS", 3)

    meta = backend.get_meta(task_id)
    assert (meta["status"], meta["result"]) == ("SUCCESS", 3)


def test_store_sets_expiry(redis_client: redis.Redis, task_id: str) -> None:
    backend = RedisBackend(URL, expires=120)
    try:
        backend.store(task_id, "SUCCESS", 1)
    finally:
        backend.close()

    assert 110 <= redis_client.ttl(KEY_PREFIX + task_id) <= 120


def test_store_publishes_the_meta_on_the_keys_channel(
    backend: RedisBackend, redis_client: redis.Redis, task_id: str
) -> None:
    with redis_client.pubsub() as pubsub:  # type: ignore[no-untyped-call]
        pubsub.subscribe(KEY_PREFIX + task_id)
        assert pubsub.get_message(timeout=WAIT)["type"] == "subscribe"
        backend.store(task_id, "SUCCESS", "hi")
        message = pubsub.get_message(timeout=WAIT)

    assert message is not None
    assert message["data"] == redis_client.get(KEY_PREFIX + task_id)


def test_unknown_id_is_pending(backend: RedisBackend, task_id: str) -> None:
    result = AsyncResult(task_id, backend)

    assert backend.get_meta(task_id) == {"status": "PENDING", "result": None}
    assert (result.state, result.ready(), result.result) == ("PENDING", False, None)


def test_wait_returns_a_stored_result_at_once(backend: RedisBackend, task_id: str) -> None:
    backend.store(task_id, "SUCCESS", 5)

    assert backend.wait(task_id, timeout=WAIT)["result"] == 5


def test_wait_returns_a_result_another_thread_stores_later(
    backend: RedisBackend, task_id: str
) -> None:
    def store() -> None:
        backend.store_state(task_id, "STARTED")  # not ready: wait keeps waiting
        backend.store(task_id, "SUCCESS", "late")

    storer = store_after_read(task_id, store)
    meta = backend.wait(task_id, timeout=WAIT)
    storer.join(WAIT)

    assert (meta["status"], meta["result"]) == ("SUCCESS", "late")


def test_wait_raises_after_its_timeout(backend: RedisBackend, task_id: str) -> None:
    started = time.monotonic()
    with pytest.raises(ResultTimeoutError, match=task_id):
        backend.wait(task_id, timeout=0.2)

    assert 0.2 <= time.monotonic() - started < WAIT


def test_get_raises_the_tasks_builtin_exception(backend: RedisBackend, task_id: str) -> None:
    backend.store_outcome(failure(task_id, "ValueError", "builtins", "bad input"))

    with pytest.raises(ValueError, match="bad input") as info:
        AsyncResult(task_id, backend).get(timeout=WAIT)
    assert "Remote traceback" in "".join(info.value.__notes__)


def test_get_raises_task_failed_error_for_an_unknown_exception(
    backend: RedisBackend, task_id: str
) -> None:
    backend.store_outcome(failure(task_id, "PaymentError", "shop.not_imported", "declined"))

    with pytest.raises(TaskFailedError) as info:
        AsyncResult(task_id, backend).get(timeout=WAIT)
    error = info.value
    assert (error.exc_type, error.exc_module, error.message) == (
        "PaymentError",
        "shop.not_imported",
        "declined",
    )
    assert error.remote_traceback == "Traceback (most recent call last):\n  ...\n"


def test_get_never_calls_what_is_not_an_exception_class(
    backend: RedisBackend, task_id: str
) -> None:
    backend.store_outcome(failure(task_id, "system", "os", "echo owned"))

    with pytest.raises(TaskFailedError, match=r"os\.system"):
        AsyncResult(task_id, backend).get(timeout=WAIT)


def test_get_never_raises_a_base_exception_such_as_system_exit(
    backend: RedisBackend, task_id: str
) -> None:
    backend.store_outcome(failure(task_id, "SystemExit", "builtins", "1"))

    with pytest.raises(TaskFailedError, match="SystemExit"):
        AsyncResult(task_id, backend).get(timeout=WAIT)


def test_get_returns_a_ready_result_even_with_zero_timeout(
    backend: RedisBackend, task_id: str
) -> None:
    backend.store(task_id, "SUCCESS", "done")

    assert AsyncResult(task_id, backend).get(timeout=0) == "done"


def test_get_without_propagate_returns_the_exception(backend: RedisBackend, task_id: str) -> None:
    backend.store_outcome(failure(task_id, "KeyError", "builtins", "k"))

    assert isinstance(AsyncResult(task_id, backend).get(timeout=WAIT, propagate=False), KeyError)


def test_forget_deletes_the_result(backend: RedisBackend, task_id: str) -> None:
    backend.store(task_id, "SUCCESS", 1)
    backend.forget(task_id)

    assert backend.get_meta(task_id)["status"] == "PENDING"


def test_threads_share_one_backend(backend: RedisBackend, task_id: str) -> None:
    ids = [f"{task_id}-{n}" for n in range(16)]
    errors: queue.Queue[BaseException] = queue.Queue()

    def store(tid: str, value: int) -> None:
        try:
            backend.store(tid, "SUCCESS", value)
        except BaseException as exc:
            errors.put(exc)

    threads = [threading.Thread(target=store, args=(tid, n)) for n, tid in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    try:
        assert errors.empty()
        assert [backend.get_meta(tid)["result"] for tid in ids] == list(range(16))
    finally:
        for tid in ids:
            backend.forget(tid)


# --- wire compatibility with the real Celery 5.7 client --------------------------------


def test_celery_reads_our_success(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    backend.store(task_id, "SUCCESS", {"total": 3})

    assert celery_app.AsyncResult(task_id).get(timeout=WAIT) == {"total": 3}


def test_celery_raises_our_failures_exception_type(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    backend.store_outcome(failure(task_id, "ValueError", "builtins", "bad input"))

    with pytest.raises(ValueError, match="bad input"):
        celery_app.AsyncResult(task_id).get(timeout=WAIT)


def test_celery_raises_revoked_for_our_revoke(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    backend.store_state(task_id, "REVOKED", reason="expired")

    with pytest.raises(celery.exceptions.TaskRevokedError, match="expired"):
        celery_app.AsyncResult(task_id).get(timeout=WAIT)


def test_celery_get_receives_a_result_we_publish_later(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    storer = store_after_read(task_id, lambda: backend.store(task_id, "SUCCESS", [4, 2]))
    value = celery_app.AsyncResult(task_id).get(timeout=WAIT)
    storer.join(WAIT)

    assert value == [4, 2]


def test_we_read_celerys_success(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    celery_app.backend.store_result(task_id, {"total": 3}, "SUCCESS")

    assert AsyncResult(task_id, backend).get(timeout=WAIT) == {"total": 3}


def test_we_raise_celerys_failure(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    celery_app.backend.mark_as_failure(task_id, ValueError("bad", 3), traceback="tb")

    with pytest.raises(ValueError, match="bad") as info:
        AsyncResult(task_id, backend).get(timeout=WAIT)
    assert info.value.args == ("bad", 3)


def test_we_raise_an_exception_class_from_an_imported_module(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    celery_app.backend.mark_as_failure(task_id, queue.Empty("nothing"))

    with pytest.raises(queue.Empty):
        AsyncResult(task_id, backend).get(timeout=WAIT)


def test_we_raise_revoked_for_celerys_revoke(
    backend: RedisBackend, celery_app: celery.Celery, task_id: str
) -> None:
    celery_app.backend.mark_as_revoked(task_id, reason="revoked")

    with pytest.raises(TaskRevokedError, match="revoked"):
        AsyncResult(task_id, backend).get(timeout=WAIT)
