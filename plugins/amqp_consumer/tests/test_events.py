"""Events: the dispatcher on kombu's memory transport, then task events from real
workers on RabbitMQ and Redis, read by a bootkit monitor queue and by Celery's own
`EventReceiver` and `State`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.connection import Connection

from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.clock import LamportClock
from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.pidbox import call
from bootkit_amqp_consumer.state import REVOKES_MAX, WorkerState
from bootkit_amqp_consumer.timer import Timer
from e2e_support import WAIT, Broker, Monitor, StartWorker, wait_until
from e2e_tasks import ADD

COMMON = {"type", "hostname", "utcoffset", "pid", "clock", "timestamp"}


# -- the clock and revoked ids ---------------------------------------------------------


def test_lamport_clock_moves_past_what_it_receives() -> None:
    clock = LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12  # an older timestamp only ticks
    assert clock.adjust("junk") == 13  # so does a malformed one
    assert clock.adjust(None) == 14


def test_revoked_ids_merge_in_mingle_form_and_stay_bounded() -> None:
    state = WorkerState()
    now = time.time()
    new = state.merge_revoked({"a": [now, "a"], "b": now, "c": "junk", 5: [now, 5]})  # type: ignore[dict-item]  # a bad id, on purpose
    assert new == 2
    assert state.is_revoked("a")
    assert state.is_revoked("b")
    assert not state.is_revoked("c")
    assert state.revoked_wire() == {"a": [now, "a"], "b": [now, "b"]}
    assert list(state.revoked_wire(limit=1)) == ["b"]  # the newest first kept

    state.merge_revoked({"old": [now - 100_000, "old"]})  # past the expiry: dropped
    assert not state.is_revoked("old")

    for i in range(REVOKES_MAX + 5):
        state.revoke(f"t{i}")
    assert len(state.revoked) == REVOKES_MAX
    assert not state.is_revoked("t0")
    assert state.is_revoked(f"t{REVOKES_MAX + 4}")


# -- the dispatcher, on kombu's memory transport ---------------------------------------


@pytest.fixture
def memory() -> Iterator[Any]:
    with Connection(f"memory://events-{uuid.uuid4().hex}") as connection:
        yield connection


def test_worker_events_carry_every_field_and_a_rising_clock(memory: Any) -> None:
    monitor = Monitor(memory)
    clock = LamportClock(40)
    dispatcher = EventDispatcher(memory.clone(), hostname="w1@host", clock=clock)
    dispatcher.send("worker-online", **dispatcher.worker_fields(freq=2.0))
    dispatcher.send("worker-heartbeat", **dispatcher.worker_fields(freq=2.0))
    monitor.wait_for(lambda e: len(e) == 2, "two worker events")
    dispatcher.close()

    online, beat = monitor.events
    assert monitor.keys == ["worker.online", "worker.heartbeat"]
    assert set(online) >= COMMON | {"freq", "sw_ident", "sw_ver", "sw_sys"}
    assert online["type"] == "worker-online"
    assert online["hostname"] == "w1@host"
    assert online["sw_ident"] == "py-bootkit"
    assert (online["clock"], beat["clock"]) == (41, 42)
    assert isinstance(online["timestamp"], float)


def test_task_events_are_off_until_enabled_then_sent_in_batches(memory: Any) -> None:
    monitor = Monitor(memory)
    timer = Timer()
    timer.start()
    dispatcher = EventDispatcher(
        memory.clone(),
        hostname="w1@host",
        clock=LamportClock(),
        schedule=timer.call_later,
        buffer_limit=3,
        flush_interval=0.05,
    )
    try:
        dispatcher.send("task-received", uuid="t0")  # task events off: not sent
        dispatcher.task_events = True
        for i in range(1, 4):  # the third fills the buffer: one task.multi of three
            dispatcher.send("task-received", uuid=f"t{i}")
        dispatcher.send("task-succeeded", uuid="t1", result="1", runtime=0.1)  # by the timer
        monitor.wait_for(lambda e: len(e) == 4, "four task events")
    finally:
        dispatcher.close()
        timer.stop()
    assert monitor.keys == ["task.multi", "task.multi"]
    assert [e["uuid"] for e in monitor.events] == ["t1", "t2", "t3", "t1"]
    assert monitor.types()[-1] == "task-succeeded"
    assert all(set(e) >= COMMON for e in monitor.events)


def test_dispatcher_may_be_used_from_many_threads(memory: Any) -> None:
    monitor = Monitor(memory)
    dispatcher = EventDispatcher(memory.clone(), hostname="w1@host", clock=LamportClock())

    def send() -> None:
        for _ in range(50):
            dispatcher.send("worker-heartbeat")

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    monitor.wait_for(lambda e: len(e) == 200, "200 events")
    dispatcher.close()
    assert sorted(e["clock"] for e in monitor.events) == list(range(1, 201))


# -- real workers ----------------------------------------------------------------------


def test_task_events_follow_a_task_when_on_and_enable_events_turns_them_on(
    start_worker: StartWorker, broker: Broker, client: App
) -> None:
    with broker.connection() as connection:
        monitor = Monitor(connection)
        node = f"ev-{uuid.uuid4().hex[:8]}@host"
        start_worker("-n", node)

        quiet = client.send_task(ADD, [1, 2])
        assert quiet.get(timeout=WAIT) == 3
        assert list(call(connection, "enable_events", destination=[node])) == [
            {node: {"ok": "task events enabled"}}
        ]
        loud = client.send_task(ADD, [2, 3])
        assert loud.get(timeout=WAIT) == 5

        def mine(events: list[dict[str, Any]]) -> list[str]:
            return [e["type"] for e in events if e.get("uuid") == loud.id]

        monitor.wait_for(lambda e: "task-succeeded" in mine(e), "task-succeeded")
        assert mine(monitor.events) == ["task-received", "task-started", "task-succeeded"]
        # Received before events were on (its task-succeeded may race the switch).
        assert "task-received" not in [
            e["type"] for e in monitor.events if e.get("uuid") == quiet.id
        ]
        received, _, succeeded = (e for e in monitor.events if e.get("uuid") == loud.id)
        assert received["name"] == ADD
        assert received["args"] in ("(2, 3)", "[2, 3]")
        assert set(received) >= COMMON | {"root_id", "parent_id", "retries", "eta", "expires"}
        assert succeeded["result"] == "5"
        assert succeeded["runtime"] >= 0

        unknown = client.send_task("no.such.task", [])
        monitor.wait_for(lambda e: any(x.get("uuid") == unknown.id for x in e), "task-rejected")
        (rejected,) = (e for e in monitor.events if e.get("uuid") == unknown.id)
        assert (rejected["type"], rejected["requeue"]) == ("task-rejected", False)


def test_celery_state_sees_the_worker_alive_and_records_its_tasks(
    start_worker: StartWorker, broker: Broker, client: App
) -> None:
    celery: Any = pytest.importorskip("celery")
    app = celery.Celery(broker=broker.url, set_as_current=False)
    state = app.events.State()
    node = f"ev-{uuid.uuid4().hex[:8]}@host"
    connection = app.connection_for_read()
    receiver = app.events.Receiver(connection, handlers={"*": state.event})
    ready = threading.Event()
    receiver.on_consume_ready = lambda *a, **k: ready.set()
    thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
    thread.start()
    try:
        assert ready.wait(WAIT), "Celery's receiver did not start consuming"
        start_worker("-E", "-n", node)
        # Alive from its worker-online and heartbeats alone, before it ran anything.
        worker = wait_until(lambda: state.workers.get(node), f"{node} in Celery's State")
        wait_until(lambda: worker.alive, f"{node} alive in Celery's State")
        assert worker.sw_ident == "py-bootkit"
        assert worker.freq == 2.0
        result = client.send_task(ADD, [20, 22])
        assert result.get(timeout=WAIT) == 42
        task = wait_until(
            lambda: (t := state.tasks.get(result.id)) and t.state == "SUCCESS" and t,
            "the task SUCCESS in Celery's State",
        )
        assert task.name == ADD
        assert task.result == "42"
        assert task.worker.hostname == node
    finally:
        receiver.should_stop = True
        thread.join(WAIT)
        connection.close()
        app.close()
