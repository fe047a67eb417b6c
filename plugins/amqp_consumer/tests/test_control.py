"""Remote control on the pidbox: revoke by id from bootkit's client and from Celery's,
and Celery's ping, against real worker subprocesses on RabbitMQ and Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bootkit_amqp_consumer import App, TaskRevokedError
from e2e_support import RESULTS_URL, WAIT, Broker, StartWorker, wait_for_events
from e2e_tasks import WORK, read_ledger


def done(ledger: Path) -> list[str]:
    return sorted(e.tag for e in read_ledger(ledger) if e.event == "done")


def test_revoked_task_is_not_run(
    start_worker: StartWorker, client: App, ledger: Path, queue: str
) -> None:
    worker = start_worker()
    held = client.send_task(WORK, [str(ledger), "held"], countdown=2.0)
    wait_for_events(worker, "task_received", 1)

    client.revoke(held.id)
    wait_for_events(worker, "tasks_revoked", 1)
    after = client.send_task(WORK, [str(ledger), "after"])

    assert after.get(timeout=WAIT) == "after"
    with pytest.raises(TaskRevokedError):
        held.get(timeout=WAIT)
    assert done(ledger) == ["after"]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_worker_with_every_slot_busy_still_answers_control_at_once(
    start_worker: StartWorker, client: App, ledger: Path, queue: str, pool: str
) -> None:
    # While every slot is busy and a task waits for one, the loop reads the broker only
    # when a task ends or after INTAKE_DELAY: a revoke must still land long before.
    worker = start_worker(pool=pool, concurrency=1)
    busy = client.send_task(WORK, [str(ledger), "busy", 3.0])
    waiting = client.send_task(WORK, [str(ledger), "waiting"])
    wait_for_events(worker, "task_received", 2)

    asked = time.monotonic()
    client.revoke(waiting.id)
    wait_for_events(worker, "tasks_revoked", 1)
    answered = time.monotonic() - asked

    assert done(ledger) == [], "the busy task ended first: the revoke was not handled while busy"
    assert answered < 1.0
    assert busy.get(timeout=WAIT) == "busy"
    with pytest.raises(TaskRevokedError):
        waiting.get(timeout=WAIT)
    assert done(ledger) == ["busy"]


def test_celery_control_revokes_and_pings(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path, queue: str
) -> None:
    celery: Any = pytest.importorskip("celery")
    worker = start_worker()
    peer = celery.Celery(broker=broker.url, backend=RESULTS_URL)
    try:
        replies = peer.control.ping(timeout=2.0)
        assert any(node.startswith("bootkit@") for reply in replies for node in reply)

        held = peer.send_task(WORK, [str(ledger), "held"], queue=queue, countdown=2.0)
        wait_for_events(worker, "task_received", 1)
        peer.control.revoke(held.id)
        wait_for_events(worker, "tasks_revoked", 1)

        with pytest.raises(celery.exceptions.TaskRevokedError):
            held.get(timeout=WAIT)
        assert done(ledger) == []
    finally:
        peer.close()
