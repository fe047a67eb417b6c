"""The file result backend (the embedded default): same meta as Redis, atomic, waitable."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bootkit_amqp_consumer.backends import FileBackend, open_backend
from bootkit_amqp_consumer.errors import ResultTimeoutError
from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.results import AsyncResult


def test_file_url_opens_a_file_backend(tmp_path: Path) -> None:
    assert isinstance(open_backend(f"file://{tmp_path}"), FileBackend)


def test_success_round_trips_in_celerys_format(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.store_outcome(Outcome("t1", "SUCCESS", result=[1, 2]))
    meta = backend.get_meta("t1")
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", [1, 2], "t1")
    assert AsyncResult("t1", backend).get(timeout=1) == [1, 2]


def test_failure_raises_the_tasks_exception(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.store_outcome(
        Outcome("t2", "FAILURE", exc_type="ValueError", exc_module="builtins", exc_message="boom")
    )
    with pytest.raises(ValueError, match="boom"):
        AsyncResult("t2", backend).get(timeout=1)


def test_a_stored_success_is_never_replaced(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.store("t3", "SUCCESS", 1)
    backend.store("t3", "RETRY")
    assert backend.get_meta("t3")["status"] == "SUCCESS"


def test_wait_returns_a_result_stored_later(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    waiting = threading.Event()

    def store_when_waited() -> None:
        waiting.wait(5)
        backend.store("t4", "SUCCESS", "late")

    thread = threading.Thread(target=store_when_waited)
    thread.start()
    waiting.set()
    assert backend.wait("t4", timeout=5)["result"] == "late"
    thread.join(5)


def test_wait_gives_up_after_its_timeout(tmp_path: Path) -> None:
    with pytest.raises(ResultTimeoutError):
        FileBackend(tmp_path).wait("never", timeout=0.05)


def test_unknown_id_is_pending_and_unsafe_ids_are_refused(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    assert backend.get_meta("nope")["status"] == "PENDING"
    with pytest.raises(ValueError, match="unsafe task id"):
        backend.get_meta("../etc")
