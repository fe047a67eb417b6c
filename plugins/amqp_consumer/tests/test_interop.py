"""Wire compatibility with the real Celery 5.7, both ways, on RabbitMQ and on Redis.

A Celery client's tasks run on a bootkit worker and Celery's `AsyncResult` reads their
results; bootkit's client sends to a real Celery worker and reads its results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery  # type: ignore[import-untyped, unused-ignore]  # celery ships no types
import pytest

from bootkit_amqp_consumer import App
from e2e_support import RESULTS_URL, TESTS, WAIT, Broker, StartWorker, unique
from e2e_tasks import ADD, FAIL, WORK, read_ledger


@pytest.fixture
def celery_client(broker: Broker, queue: str) -> Iterator[Any]:
    """Celery's own client, sending to the test's queue; results from Redis db 9."""
    app = celery.Celery("interop", broker=broker.url, backend=RESULTS_URL, set_as_current=False)
    app.conf.task_default_queue = queue
    yield app
    app.backend.result_consumer.stop()
    app.close()


@pytest.fixture
def celery_worker(tmp_path: Path, broker: Broker, queue: str) -> Iterator[Path]:
    """A real Celery worker (``-P solo``) on the test's queue; yields its log file."""
    log = tmp_path / "celery-worker.log"
    command = [sys.executable, "-m", "celery", "-A", "celery_peer", "-b", broker.url]
    command += ["--result-backend", RESULTS_URL, "worker", "-P", "solo", "-Q", queue]
    command += ["-n", f"{unique('peer')}@%h", "-l", "info"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    yield log
    # Killed: nothing is in flight by now, and Celery's own stop on RabbitMQ, warm or
    # cold, takes over 5 s.
    proc.kill()
    proc.wait(timeout=WAIT)


# -- a Celery client, a bootkit worker ------------------------------------------------


def test_celery_send_task_runs_on_a_bootkit_worker(
    start_worker: StartWorker, celery_client: Any
) -> None:
    start_worker()

    result = celery_client.send_task(ADD, args=[2, 3])

    assert result.get(timeout=WAIT) == 5
    assert result.state == "SUCCESS"


def test_celery_delay_runs_on_a_bootkit_worker(
    start_worker: StartWorker, celery_client: Any
) -> None:
    start_worker()

    @celery_client.task(name=ADD)  # type: ignore[untyped-decorator, misc, unused-ignore]
    def add(x: int, y: int) -> int:
        raise AssertionError("runs on the worker, never here")

    assert add.delay(20, 22).get(timeout=WAIT) == 42


def test_celery_client_gets_a_failure_as_its_exception_type(
    start_worker: StartWorker, celery_client: Any
) -> None:
    start_worker()

    result = celery_client.send_task(FAIL, args=["boom"])

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=WAIT)
    assert result.state == "FAILURE"


def test_celery_countdown_and_expires_are_read_by_a_bootkit_worker(
    start_worker: StartWorker, celery_client: Any, ledger: Path
) -> None:
    start_worker()
    sent = time.time()

    result = celery_client.send_task(WORK, args=[str(ledger), "later"], countdown=0.5, expires=60)

    assert result.get(timeout=WAIT) == "later"
    (start,) = [e for e in read_ledger(ledger) if e.event == "start"]
    assert start.at >= sent + 0.5


# -- bootkit's client, a Celery worker ------------------------------------------------


def test_bootkit_task_runs_on_a_celery_worker(celery_worker: Path, client: App) -> None:
    result = client.send_task(ADD, [2, 3])

    assert result.get(timeout=WAIT) == 5, celery_worker.read_text()
    assert f"Task {ADD}[{result.id}] received" in celery_worker.read_text()


def test_bootkit_client_gets_a_celery_workers_failure_as_its_exception_type(
    celery_worker: Path, client: App
) -> None:
    result = client.send_task(FAIL, ["boom"])

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=WAIT)
    assert result.state == "FAILURE"
