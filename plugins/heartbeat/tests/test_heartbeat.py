"""worker-online, worker-heartbeat and worker-offline from real workers on RabbitMQ and
Redis, read from a monitor queue; the ``heartbeat`` control command; the interval
option; turning it off."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.pidbox import call
from e2e_support import (
    WAIT,
    Broker,
    Monitor,
    StartWorker,
    run_bootkit,
    stop,
    wait_until,
)
from e2e_tasks import WORK, read_ledger
from tests.support import one_error_line

LIFECYCLE = ("worker-online", "worker-heartbeat", "worker-offline")
ONLINE_SLACK = 0.1  # seconds worker-online may leave (from the timer) after the step started
WORKER_FIELDS = {
    "type",
    "hostname",
    "utcoffset",
    "pid",
    "clock",
    "timestamp",
    "freq",
    "active",
    "processed",
    "loadavg",
    "sw_ident",
    "sw_ver",
    "sw_sys",
}


def test_online_heartbeats_on_request_and_on_time_then_offline_with_every_field(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path
) -> None:
    node = f"hb-{uuid.uuid4().hex[:8]}@host"
    with broker.connection() as connection:
        monitor = Monitor(connection)
        worker = start_worker("-n", node)  # the default interval: 2 s

        def mine(kind: str) -> list[dict[str, Any]]:
            return [e for e in monitor.events if e.get("hostname") == node and e["type"] == kind]

        monitor.wait_for(lambda _: bool(mine("worker-online")), "worker-online")
        (online,) = mine("worker-online")
        assert (online["active"], online["processed"]) == (0, 0)

        # While a task runs, ask for a heartbeat: it comes at once and counts the task.
        result = client.send_task(WORK, (str(ledger), "t1", 1.0))
        wait_until(lambda: read_ledger(ledger), "the task's start")
        asked = time.time()
        assert call(connection, "heartbeat", destination=[node], timeout=WAIT) == [
            {node: {"ok": "heartbeat sent"}}
        ]
        replied = time.time()

        def requested() -> list[dict[str, Any]]:
            # Sent between our request and its reply: the first timed one is due 2 s
            # after worker-online, long after the reply.
            return [e for e in mine("worker-heartbeat") if asked <= e["timestamp"] <= replied]

        monitor.wait_for(lambda _: bool(requested()), "the requested worker-heartbeat")
        assert (requested()[0]["active"], requested()[0]["processed"]) == (1, 0)

        # On time, every 2 s: once the task finished, the count moves to processed.
        assert result.get(timeout=WAIT) == "t1"
        monitor.wait_for(
            lambda _: any(e["processed"] == 1 for e in mine("worker-heartbeat")),
            "a worker-heartbeat counting the finished task",
        )
        assert stop(worker) == 0
        monitor.wait_for(lambda _: bool(mine("worker-offline")), "worker-offline")

    # Its worker events but elections' (workers of other tests may hold one).
    ours = [e for e in monitor.events if e.get("hostname") == node and e["type"] in LIFECYCLE]
    types = [e["type"] for e in ours]
    assert types[0] == "worker-online"
    assert types[-1] == "worker-offline"
    assert set(types[1:-1]) == {"worker-heartbeat"}
    timed = [e for e in mine("worker-heartbeat") if e not in requested()]
    # The interval counts from the step's start; worker-online leaves just after it.
    assert timed[0]["timestamp"] - online["timestamp"] >= 2.0 - ONLINE_SLACK
    for event in ours:
        assert set(event) >= WORKER_FIELDS, event["type"]
        assert event["freq"] == 2.0
        assert event["sw_ident"] == "py-bootkit"
        assert isinstance(event["sw_ver"], str)
        assert isinstance(event["sw_sys"], str)
        assert len(event["loadavg"]) == 3
        assert all(isinstance(x, float) for x in event["loadavg"])
    assert ours[-1]["active"] == 0
    clocks = [e["clock"] for e in ours]
    assert clocks == sorted(set(clocks))  # the Lamport clock moves on with every event
    assert {k for k in monitor.keys if k.startswith("worker.")} >= {
        "worker.online",
        "worker.heartbeat",
        "worker.offline",
    }


def graph(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bootkit(tmp_path, "graph", *args, name="graph")


def test_without_heartbeat_or_events_the_step_is_shown_disabled_with_the_reason(
    tmp_path: Path,
) -> None:
    for flag, reason in (
        ("heartbeat", "disabled by --without heartbeat (command line)"),
        ("events", "it needs events.dispatcher, disabled by --without events (command line)"),
    ):
        done = graph(tmp_path, "--json", "--without", flag)
        assert done.returncode == 0, done.stderr
        steps = {s["name"]: s for s in json.loads(done.stdout)["steps"]}
        assert steps["heartbeat.beat"]["status"] == "disabled"
        assert reason in steps["heartbeat.beat"]["reason"]


def test_an_interval_not_above_zero_is_refused_in_one_line(tmp_path: Path) -> None:
    done = graph(tmp_path, "--heartbeat-interval", "0")
    assert done.returncode == 2
    assert "--heartbeat-interval must be above 0 seconds, got 0" in one_error_line(done.stderr)
