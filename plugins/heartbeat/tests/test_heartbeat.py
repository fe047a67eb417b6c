"""worker-online, worker-heartbeat and worker-offline from real workers on RabbitMQ and
Redis, read from a monitor queue; the ``heartbeat`` control command; turning it off."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from bootkit_amqp_consumer.pidbox import call
from e2e_support import WAIT, Broker, Monitor, StartWorker, stop, worker_env

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


def test_online_heartbeats_and_offline_with_every_field(
    start_worker: StartWorker, broker: Broker
) -> None:
    node = f"hb-{uuid.uuid4().hex[:8]}@host"
    with broker.connection() as connection:
        monitor = Monitor(connection)
        worker = start_worker("-n", node, "--heartbeat-interval", "0.3")

        def mine() -> list[str]:
            return [e["type"] for e in monitor.events if e.get("hostname") == node]

        monitor.wait_for(lambda _: mine().count("worker-heartbeat") >= 2, "two heartbeats")
        sent = call(connection, "heartbeat", destination=[node], timeout=WAIT)
        assert sent == [{node: {"ok": "heartbeat sent"}}]
        assert stop(worker) == 0
        monitor.wait_for(lambda _: "worker-offline" in mine(), "worker-offline")

    types = mine()
    assert types[0] == "worker-online"
    assert types[-1] == "worker-offline"
    assert set(types[1:-1]) == {"worker-heartbeat"}
    ours = [e for e in monitor.events if e.get("hostname") == node]
    for event in ours:
        assert set(event) >= WORKER_FIELDS, event["type"]
        assert event["freq"] == 0.3
        assert event["sw_ident"] == "py-bootkit"
        assert len(event["loadavg"]) == 3
    clocks = [e["clock"] for e in ours]
    assert clocks == sorted(clocks)
    assert len(set(clocks)) == len(clocks)
    assert {k for k in monitor.keys if k.startswith("worker.")} >= {
        "worker.online",
        "worker.heartbeat",
        "worker.offline",
    }


def test_without_heartbeat_the_step_is_shown_disabled_with_the_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bootkit", "graph", "--json", "--without", "heartbeat"],
        env={**worker_env(tmp_path, "graph"), "PYTHONHASHSEED": "0"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    plan = json.loads(done.stdout)
    steps = {s["name"]: s for s in plan["steps"]}
    assert steps["heartbeat.beat"]["status"] == "disabled"
    assert "--without heartbeat" in steps["heartbeat.beat"]["reason"]
