"""The prefork pool whose children consume for themselves (``--prefork-intake children``):
what the parent does for them. How tasks run with it is tested beside the other pools
(test_worker_e2e, test_faults P3, test_control_commands)."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from types import MappingProxyType

import pytest
from pool_support import make_job
from test_control_commands import ask, started

from bootkit import Settings
from bootkit_amqp_consumer import App, TaskRevokedError, TimeLimitExceededError
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pool_slot import Slot
from e2e_support import (
    WAIT,
    Broker,
    StartWorker,
    events,
    start_refused,
    wait_for_events,
    wait_until,
)
from e2e_tasks import HARD_LIMIT, HARD_LIMITED, WORK, read_ledger


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_the_parent_answers_for_its_children_and_revokes_in_them(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path
) -> None:
    node = f"kids-{uuid.uuid4().hex[:8]}@host"
    worker = start_worker("-n", node, "--control-allow", "all", pool="prefork-children")
    running = [client.send_task(WORK, [str(ledger), f"a{i}", 30.0]) for i in range(2)]
    wait_until(lambda: started(ledger, "a0") and started(ledger, "a1"), "both children busy")

    active = ask(broker, node, "active")
    assert sorted(task["id"] for task in active) == sorted(r.id for r in running)
    children = ask(broker, node, "stats")["pool"]["processes"]
    assert {task["worker_pid"] for task in active} == set(children)  # one task in each
    assert worker.proc.pid not in children
    where = ask(broker, node, "query_task", task_id=[running[0].id, "no-such-id"])
    assert list(where) == [running[0].id]
    assert where[running[0].id][0] == "active"
    assert ask(broker, node, "stats")["total"] == {WORK: 2}
    # Both children are busy: each handed back what it had reserved and consumes no
    # more until its task ends, so this one waits in the queue, unseen by inspect.
    waiting = client.send_task(WORK, [str(ledger), "b"])

    # Revoked in the parent, it is revoked in the children: the reserved task never
    # runs, and the running ones are killed where they run.
    ask(broker, node, "revoke", task_id=waiting.id)
    ask(broker, node, "revoke", task_id=[r.id for r in running], terminate=True, signal="KILL")
    for result in [*running, waiting]:
        with pytest.raises(TaskRevokedError):
            result.get(timeout=WAIT)
    assert sorted(e.tag for e in read_ledger(ledger) if e.event == "start") == ["a0", "a1"]
    assert sorted(ask(broker, node, "revoked")) == sorted([waiting.id, *(r.id for r in running)])


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_a_late_ack_task_killed_for_its_time_limit_is_acked_not_run_again(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path, queue: str
) -> None:
    worker = start_worker("--acks-late", pool="prefork-children")

    result = client.send_task(HARD_LIMITED, [str(ledger), "h", 5.0])

    with pytest.raises(TimeLimitExceededError):
        result.get(timeout=HARD_LIMIT + WAIT)
    # Its child's connection died with it, so the broker redelivered the message to a
    # child, which asked the parent and acknowledged it without running it.
    wait_for_events(worker, "task_already_done", 1, task_id=result.id)
    wait_until(lambda: broker.depth(queue) == 0, "nothing left in the queue")
    assert [e.event for e in read_ledger(ledger)] == ["start"]


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_a_busy_child_hands_back_what_it_holds_and_reserves_to_an_idle_one(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path, queue: str
) -> None:
    node = f"kids-{uuid.uuid4().hex[:8]}@host"
    worker = start_worker("-n", node, "--control-allow", "all", pool="prefork-children")
    long = client.send_task(WORK, [str(ledger), "long", 30.0])
    # The children take these in turn: the one running the long task holds its ETA ones
    # and reserves the rest only until it hands them back to the other.
    later = [client.send_task(WORK, [str(ledger), f"eta{i}"], countdown=1.0) for i in range(4)]
    now = [client.send_task(WORK, [str(ledger), f"now{i}"]) for i in range(4)]
    for result in [*later, *now]:
        result.get(timeout=WAIT)

    entries = {e.tag: e for e in read_ledger(ledger) if e.event == "start"}
    (busy,) = {e.pid for e in read_ledger(ledger) if e.tag == "long"}
    assert all(entries[tag].pid != busy for tag in entries if tag != "long")
    handed = sum(e["count"] for e in events(worker, "tasks_handed_back", running=[long.id]))
    assert handed >= 1
    assert ask(broker, node, "stats")["total"] == {WORK: 9}  # each counted once
    ask(broker, node, "revoke", task_id=long.id, terminate=True, signal="KILL")
    with pytest.raises(TaskRevokedError):
        long.get(timeout=WAIT)
    wait_until(lambda: broker.depth(queue) == 0, "nothing left in the queue")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["-P", "threads"], "--prefork-intake children needs -P prefork, not -P threads"),
        (["-b", "redis://127.0.0.1:6379/0"], "--prefork-intake children needs an AMQP broker"),
        ([], "--prefork-intake children needs an AMQP broker"),  # the embedded broker
    ],
)
def test_children_intake_needs_prefork_and_an_amqp_broker(
    tmp_path: Path, args: list[str], error: str
) -> None:
    assert error in start_refused(tmp_path, "--prefork-intake", "children", *args)


@pytest.mark.parametrize(
    ("options", "intake"),
    [
        ({"broker": "amqp://guest:guest@127.0.0.1:5672//"}, "children"),
        ({"broker": "pyamqp://127.0.0.1//", "prefork_intake": "parent"}, "parent"),
        ({"broker": "redis://127.0.0.1:6379/0"}, "parent"),
        ({}, "parent"),  # the embedded broker
        ({"broker": "amqp://127.0.0.1//", "pool": "threads"}, "parent"),
    ],
)
def test_the_default_intake_is_the_childrens_on_an_amqp_broker(
    tmp_path: Path, options: dict[str, str], intake: str
) -> None:
    settings = Settings(state_dir=tmp_path, options=MappingProxyType(options))
    assert WorkerConfig.from_settings(settings).prefork_intake == intake


def test_a_slot_left_mid_write_by_a_killed_child_is_still_read() -> None:
    slot = Slot()
    slot.begin(make_job("add", 1, 2), acks_late=True, ignore_result=False, retries=0)
    struct.pack_into("<Q", slot._map, 0, 7)  # an odd sequence: a write that never ended
    assert slot.read().name == "add"  # read as it is, not waited on for ever
    slot.close()
