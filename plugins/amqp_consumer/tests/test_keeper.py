"""A consumer whose loop runs its task inline (``-P solo``, a prefork child consuming
for itself) is kept while a long task runs: it hands back what it reserved (K2 in
test_faults), keeps its broker connection alive and answers remote control."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import MappingProxyType

import pytest
from test_control_commands import ask, started

from bootkit import Settings
from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.options import WorkerConfig
from e2e_support import WAIT, Broker, StartWorker, wait_until
from e2e_tasks import WORK

HEARTBEAT = 1.0  # seconds; RabbitMQ drops a connection silent for two of them


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["solo", "prefork-children"])
def test_a_task_longer_than_the_heartbeat_bound_keeps_the_connection(
    start_worker: StartWorker, client: App, ledger: Path, pool: str
) -> None:
    worker = start_worker("--broker-heartbeat", str(HEARTBEAT), pool=pool)
    long = client.send_task(WORK, [str(ledger), "long", 5 * HEARTBEAT])
    assert long.get(timeout=WAIT) == "long"
    assert client.send_task(WORK, [str(ledger), "after"]).get(timeout=WAIT) == "after"
    # Unkept, the broker closes the connection during the task: the consumer then logs
    # the loss and reconnects.
    complaints = [e for e in worker.events() if e.get("level") in ("warning", "error")]
    assert complaints == []


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_a_solo_worker_busy_with_a_long_task_answers_inspect(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path
) -> None:
    node = f"solo-{uuid.uuid4().hex[:8]}@host"
    start_worker("-n", node, pool="solo")
    long = client.send_task(WORK, [str(ledger), "long", 10.0])
    wait_until(lambda: started(ledger, "long"), "the long task running")
    # Twice: the second request comes after the first was answered, mid-task.
    for _ in range(2):
        asked = time.monotonic()
        active = ask(broker, node, "active")
        answered = time.monotonic() - asked
        assert [task["id"] for task in active] == [long.id]
        assert answered < 2.0, f"answered after {answered:.2f} s"  # not once the task ends
    assert long.get(timeout=WAIT) == "long"


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize(
    ("pool", "prefetch"), [("solo", 16), ("prefork-children", 32), ("threads", 8)]
)
def test_an_inline_consumer_reserves_sixteen_a_slot_by_default(
    start_worker: StartWorker, broker: Broker, pool: str, prefetch: int
) -> None:
    # Its reserve waits for no long task (it is handed back) and the broker requeues it
    # if the worker dies; a pool that queues tasks behind busy threads keeps 4 a slot.
    node = f"reserve-{uuid.uuid4().hex[:8]}@host"
    start_worker("-n", node, pool=pool)
    wait_until(lambda: ask(broker, node, "stats")["prefetch_count"] == prefetch, "the default")


@pytest.mark.parametrize(
    ("options", "multiplier"),
    [
        ({"broker": "amqp://127.0.0.1//", "pool": "solo"}, 16),
        ({"broker": "amqp://127.0.0.1//"}, 16),  # prefork, the children's intake
        ({"broker": "amqp://127.0.0.1//", "prefork_intake": "parent"}, 4),
        ({"broker": "amqp://127.0.0.1//", "pool": "threads"}, 4),
        ({"broker": "redis://127.0.0.1:6379/0", "pool": "solo"}, 4),  # a visibility timeout
        ({"pool": "solo"}, 4),  # the embedded broker
        ({"broker": "amqp://127.0.0.1//", "pool": "solo", "prefetch_multiplier": 2}, 2),
        ({"broker": "redis://127.0.0.1:6379/0", "prefetch_multiplier": 9}, 9),
    ],
)
def test_the_default_reserve_is_deeper_only_for_inline_consumers_on_amqp(
    tmp_path: Path, options: dict[str, object], multiplier: int
) -> None:
    settings = Settings(state_dir=tmp_path, options=MappingProxyType(options))
    assert WorkerConfig.from_settings(settings).prefetch_multiplier == multiplier
