"""The worker end to end: real ``bootkit start`` subprocesses on RabbitMQ and on Redis.

Tasks note what they do in a ledger file (see e2e_tasks), so every count is taken
outside the worker and is exact; results come back through bootkit's own client.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bootkit_amqp_consumer import (
    App,
    MaxRetriesExceededError,
    TaskRevokedError,
    TimeLimitExceededError,
    WorkerLostError,
)
from e2e_support import (
    WAIT,
    Broker,
    Monitor,
    StartWorker,
    events,
    wait_for_events,
    wait_gone,
    wait_until,
)
from e2e_tasks import (
    ADD,
    EXIT_PROCESS,
    HARD_LIMIT,
    HARD_LIMITED,
    RETRIES,
    RETRY_COUNTDOWN,
    RETRYING,
    SOFT_LIMIT,
    SOFT_LIMITED,
    WORK,
    WORK_LATE,
    Entry,
    read_ledger,
)


def pools(*kinds: str) -> pytest.MarkDecorator:
    """Each pool of `kinds` on RabbitMQ and Redis, and with prefork also the pool whose
    children consume for themselves (RabbitMQ only: it needs an AMQP broker)."""
    cases = [(broker, kind) for kind in kinds for broker in ("rabbitmq", "redis")]
    if "prefork" in kinds:
        cases.append(("rabbitmq", "prefork-children"))
    return pytest.mark.parametrize(("broker", "pool"), cases, indirect=["broker"])


def noted(ledger: Path, event: str) -> list[Entry]:
    return [e for e in read_ledger(ledger) if e.event == event]


def tags(ledger: Path, event: str) -> list[str]:
    return sorted(e.tag for e in noted(ledger, event))


def started(ledger: Path, count: int) -> list[Entry]:
    """The ledger's starts, once there are at least `count`."""

    def enough() -> list[Entry]:
        starts = noted(ledger, "start")
        return starts if len(starts) >= count else []

    return wait_until(enough, f"{count} started task(s)")


# -- running tasks -------------------------------------------------------------------


@pools("solo", "threads", "prefork")
def test_each_pool_runs_tasks_and_get_returns_their_values(
    start_worker: StartWorker, client: App, ledger: Path, pool: str
) -> None:
    worker = start_worker(pool=pool)
    work, add = client.get(WORK), client.get(ADD)

    results = [work.delay(str(ledger), f"t{i}") for i in range(6)]
    total = add.delay(2, 3)

    assert [r.get(timeout=WAIT) for r in results] == [f"t{i}" for i in range(6)]
    assert total.get(timeout=WAIT) == 5
    assert tags(ledger, "start") == tags(ledger, "done") == [f"t{i}" for i in range(6)]
    ran_in = {e.pid for e in noted(ledger, "done")}
    assert (ran_in == {worker.proc.pid}) is (not pool.startswith("prefork")), ran_in


def test_retry_runs_max_retries_plus_one_times_then_fails(
    start_worker: StartWorker, client: App, ledger: Path
) -> None:
    start_worker()

    result = client.send_task(RETRYING, [str(ledger), "r"])

    with pytest.raises(MaxRetriesExceededError):
        result.get(timeout=WAIT)
    runs = noted(ledger, "run")
    assert len(runs) == RETRIES + 1
    assert all(b.at - a.at >= RETRY_COUNTDOWN for a, b in itertools.pairwise(runs)), runs
    assert result.state == "FAILURE"


def test_eta_and_countdown_tasks_wait_for_their_time_without_blocking_others(
    start_worker: StartWorker, client: App, ledger: Path
) -> None:
    # One slot and a prefetch of one: a held ETA task must neither take the slot nor
    # stop intake.
    start_worker("--prefetch-multiplier", "1", pool="solo")
    eta = datetime.now(UTC) + timedelta(seconds=1.0)
    sent = time.time()

    at_eta = client.send_task(WORK, [str(ledger), "eta"], eta=eta)
    counted = client.send_task(WORK, [str(ledger), "countdown"], countdown=1.0)
    now = client.send_task(WORK, [str(ledger), "now"])

    assert now.get(timeout=WAIT) == "now"
    assert (at_eta.get(timeout=WAIT), counted.get(timeout=WAIT)) == ("eta", "countdown")
    began = {e.tag: e.at for e in noted(ledger, "start")}
    assert began["eta"] >= eta.timestamp()
    assert began["countdown"] >= sent + 1.0
    assert began["now"] < sent + 1.0
    assert len(noted(ledger, "done")) == 3


def test_task_expiring_while_it_waits_is_revoked_and_never_runs(
    start_worker: StartWorker, client: App, ledger: Path
) -> None:
    start_worker(pool="solo")
    blocker = client.send_task(WORK, [str(ledger), "blocker", 1.0])
    started(ledger, 1)

    expiring = client.send_task(WORK, [str(ledger), "expiring"], expires=0.3)

    with pytest.raises(TaskRevokedError, match="expired"):
        expiring.get(timeout=WAIT)
    assert expiring.state == "REVOKED"
    assert blocker.get(timeout=WAIT) == "blocker"
    assert tags(ledger, "start") == ["blocker"]


# RabbitMQ drops a message sent already expired itself (its TTL is 0, as Celery sends
# it), so only a broker without message TTL lets the worker see it.
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_task_sent_already_expired_is_revoked_and_never_runs(
    start_worker: StartWorker, client: App, ledger: Path
) -> None:
    start_worker()

    expired = client.send_task(
        WORK, [str(ledger), "late"], expires=datetime.now(UTC) - timedelta(seconds=1)
    )

    with pytest.raises(TaskRevokedError, match="expired"):
        expired.get(timeout=WAIT)
    assert client.send_task(ADD, [1, 1]).get(timeout=WAIT) == 2
    assert read_ledger(ledger) == []


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_revoked_task_whose_result_cannot_be_stored_costs_the_worker_nothing(
    start_worker: StartWorker, client: App, ledger: Path
) -> None:
    # Nothing listens on port 1: every result store fails at once.
    worker = start_worker("--result-backend", "redis://127.0.0.1:1/0")

    expired = client.send_task(
        WORK, [str(ledger), "late"], expires=datetime.now(UTC) - timedelta(seconds=1)
    )
    client.send_task(WORK, [str(ledger), "after"])

    wait_until(lambda: tags(ledger, "done") == ["after"], "the next task run")
    wait_for_events(worker, "result_store_failed", 1, task_id=expired.id)
    assert events(worker, "task_revoked", task_id=expired.id)[0]["why"] == "expired"
    assert events(worker, "step_fault") == []
    assert worker.proc.poll() is None


# -- time limits (prefork) -----------------------------------------------------------


@pools("prefork")
def test_soft_time_limit_raises_inside_the_task(
    start_worker: StartWorker, client: App, ledger: Path, pool: str
) -> None:
    start_worker(pool=pool)

    # Sent by name with no limits, as a Celery client would: the task's own apply.
    result = client.send_task(SOFT_LIMITED, [str(ledger), "s", 5.0])

    assert result.get(timeout=WAIT) == "caught the soft limit"
    start, soft = read_ledger(ledger)
    assert (start.event, soft.event) == ("start", "soft")
    # The limit counts from the hand-over to the child, a moment before the first note.
    assert SOFT_LIMIT - 0.1 <= soft.at - start.at < SOFT_LIMIT + 1.0


@pools("prefork")
def test_hard_time_limit_kills_the_task_and_its_slot_is_replaced(
    start_worker: StartWorker, client: App, ledger: Path, pool: str
) -> None:
    start_worker(pool=pool, concurrency=1)

    result = client.send_task(HARD_LIMITED, [str(ledger), "h", 5.0])

    with pytest.raises(TimeLimitExceededError):
        result.get(timeout=HARD_LIMIT + WAIT)
    (start,) = read_ledger(ledger)
    wait_gone(start.pid)
    assert client.send_task(ADD, [2, 2]).get(timeout=WAIT) == 4
    assert [e.event for e in read_ledger(ledger)] == ["start"]


# -- lost processes (prefork, late ack) ------------------------------------------------


@pools("prefork")
def test_late_ack_task_whose_process_is_killed_is_requeued_and_completes(
    start_worker: StartWorker, client: App, ledger: Path, pool: str
) -> None:
    worker = start_worker(pool=pool)
    result = client.send_task(WORK_LATE, [str(ledger), "k", 1.0])
    (first,) = started(ledger, 1)

    os.kill(first.pid, signal.SIGKILL)

    assert result.get(timeout=WAIT) == "k"
    starts = noted(ledger, "start")
    assert len(starts) == 2
    assert starts[1].pid != first.pid
    assert len(noted(ledger, "done")) == 1
    (lost,) = wait_for_events(worker, "task_lost", 1, task_id=result.id)
    assert lost["requeued"] is True


@pools("prefork")
def test_task_that_always_kills_its_process_is_rejected_after_max_redeliveries(
    start_worker: StartWorker, client: App, ledger: Path, broker: Broker, queue: str, pool: str
) -> None:
    with broker.connection() as connection:
        monitor = Monitor(connection)
        worker = start_worker("-E", "--max-redeliveries", "2", pool=pool)

        result = client.send_task(EXIT_PROCESS, [str(ledger), "p"])

        with pytest.raises(WorkerLostError):
            result.get(timeout=WAIT)
        after = client.send_task(ADD, [1, 2])
        assert after.get(timeout=WAIT) == 3
        assert len(noted(ledger, "start")) == 3
        lost = wait_for_events(worker, "task_lost", 3, task_id=result.id)
        assert [e["requeued"] for e in lost] == [True, True, False]

        def of(task_id: str) -> list[str]:
            return [e["type"] for e in monitor.events if e.get("uuid") == task_id]

        # A requeued loss is no outcome: one task-failed, for the last loss. The losses
        # are announced by one dispatcher, in order; with the parent's intake so is the
        # later task's success.
        monitor.wait_for(
            lambda _: "task-failed" in of(result.id) and "task-succeeded" in of(after.id),
            "the lost task's failure and the next task's success",
        )
        assert of(result.id).count("task-failed") == 1
    # Children consuming for themselves: the last redelivery returns to the queue with
    # its child's connection, and the child that takes it rejects it unrun.
    wait_until(lambda: broker.depth(queue) == 0, "the task rejected, the queue empty")


# -- shutdown --------------------------------------------------------------------------


@pools("solo", "threads", "prefork")
def test_warm_shutdown_finishes_running_tasks_starts_none_and_loses_nothing(
    start_worker: StartWorker, client: App, ledger: Path, broker: Broker, queue: str, pool: str
) -> None:
    slots = 1 if pool == "solo" else 2
    worker = start_worker(pool=pool, concurrency=slots)
    names = [f"w{i}" for i in range(slots + 2)]
    results = [client.send_task(WORK_LATE, [str(ledger), n, 1.0]) for n in names]
    started(ledger, slots)

    worker.signal(signal.SIGTERM)

    assert worker.wait(WAIT) == 0
    finished = tags(ledger, "done")
    assert finished == tags(ledger, "start")
    assert len(finished) == slots
    wait_until(lambda: broker.depth(queue) == 2, "the two unstarted tasks back in the queue")
    start_worker(pool=pool, concurrency=slots)
    assert [r.get(timeout=WAIT) for r in results] == names
    assert tags(ledger, "start") == tags(ledger, "done") == names


def test_warm_shutdown_returns_a_task_held_for_its_eta_to_the_queue(
    start_worker: StartWorker, client: App, ledger: Path, broker: Broker, queue: str
) -> None:
    worker = start_worker()
    result = client.send_task(WORK, [str(ledger), "held"], countdown=2.0)
    worker.wait_for_event("task_received", timeout=WAIT)

    worker.signal(signal.SIGTERM)

    assert worker.wait(WAIT) == 0
    wait_until(lambda: broker.depth(queue) == 1, "the held task back in the queue")
    start_worker()
    assert result.get(timeout=WAIT) == "held"
    assert tags(ledger, "done") == ["held"]


# A cold stop is the kernel's os._exit(3) from its signal thread, after the worker's
# bootkit_cold_shutdown hook killed the pool's children and gave unacked messages back.


@pools("threads", "prefork")
def test_cold_shutdown_exits_3_and_unfinished_tasks_return_to_the_queue(
    start_worker: StartWorker,
    client: App,
    ledger: Path,
    broker: Broker,
    queue: str,
    pool: str,
) -> None:
    worker = start_worker(pool=pool)
    names = ["c0", "c1"]
    results = [client.send_task(WORK_LATE, [str(ledger), n, 2.0]) for n in names]
    running = started(ledger, 2)
    worker.signal(signal.SIGTERM)
    worker.wait_for_event("consumer_draining", timeout=WAIT)

    worker.signal(signal.SIGTERM)

    assert worker.wait(WAIT) == 3
    for entry in running:  # well before its task could end: none outlives the worker
        wait_gone(entry.pid, 1.0)
    assert noted(ledger, "done") == []
    wait_until(lambda: broker.depth(queue) == 2, "the two unfinished tasks back in the queue", 5.0)
    start_worker(pool=pool)
    assert [r.get(timeout=WAIT) for r in results] == names
    assert tags(ledger, "done") == names
