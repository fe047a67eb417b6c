"""The step in one process on kombu's ``memory://`` transport, with the worker's real
steps around it: the interval option sets the pace and ``freq``."""

from __future__ import annotations

import uuid
from pathlib import Path

from kombu.connection import Connection

from bootkit.testing import make_settings, running
from bootkit_amqp_consumer.steps import STEPS
from bootkit_heartbeat.steps import Heartbeat
from e2e_support import Monitor

INTERVAL = 0.1
ONLINE_SLACK = 0.05  # seconds worker-online may leave after the step started


def test_heartbeats_come_every_interval_between_online_and_offline(tmp_path: Path) -> None:
    node = f"hb-{uuid.uuid4().hex[:8]}@test"
    settings = make_settings(
        tmp_path,
        options={
            "broker": "memory://",
            "hostname": node,
            "queues": (f"q-{node}",),
            "pool": "threads",
            "concurrency": 1,
            "heartbeat_interval": INTERVAL,
        },
    )
    with Connection("memory://") as connection:
        monitor = Monitor(connection)

        def beats() -> int:
            return sum(e["type"] == "worker-heartbeat" for e in monitor.events)

        with running(*STEPS, Heartbeat, settings=settings):
            monitor.wait_for(lambda _: beats() >= 3, "three worker-heartbeats")
        monitor.wait_for(lambda _: monitor.types()[-1] == "worker-offline", "worker-offline")

    ours = [e for e in monitor.events if e["hostname"] == node]
    online, *heartbeats, offline = ours
    assert (online["type"], offline["type"]) == ("worker-online", "worker-offline")
    assert {e["type"] for e in heartbeats} == {"worker-heartbeat"}
    assert {e["freq"] for e in ours} == {INTERVAL}
    # The timer keeps the pace, never early: the interval counts from the step's start,
    # and worker-online leaves (from the timer too) just after it.
    for n, beat in enumerate(heartbeats, start=1):
        assert beat["timestamp"] >= online["timestamp"] - ONLINE_SLACK + n * INTERVAL
