"""Three workers in one cluster, on RabbitMQ and on Redis: mingle, gossip, revoke,
election, a worker killed with SIGKILL and one stopped warm."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.pidbox import broadcast, call
from e2e_support import (
    WAIT,
    Broker,
    StartWorker,
    events,
    stop,
    wait_for_events,
    wait_until,
    worker_env,
)

LOST_WITHIN = 5.0  # seconds from SIGKILL to peer_lost, at the default 2 s heartbeat


def test_workers_mingle_gossip_revoke_elect_and_notice_loss(
    start_worker: StartWorker, broker: Broker, client: App
) -> None:
    tag = uuid.uuid4().hex[:6]
    a_node, b_node, c_node = (f"{n}-{tag}@host" for n in "abc")
    a = start_worker("-n", a_node)
    (alone,) = wait_for_events(a, "mingle_synced", 1)
    # Nobody else consumes its queue: no wait (other tests' workers on the shared
    # broker may still answer on Redis, quickly).
    assert alone["seconds"] < 0.1, alone

    early = str(uuid.uuid4())
    client.revoke(early)
    wait_for_events(a, "tasks_revoked", 1)

    # B starts later: mingle brings it A's revoked id, and waits only for A.
    b = start_worker("-n", b_node)
    (synced,) = wait_for_events(b, "mingle_synced", 1)
    assert a_node in synced["nodes"]
    assert synced["revoked_new"] >= 1
    assert synced["seconds"] < 0.5, synced
    with broker.connection() as connection:
        (reply,) = call(connection, "revoked", destination=[b_node], timeout=WAIT)
    assert early in reply[b_node]

    # They see each other through their heartbeats.
    wait_until(lambda: events(a, "peer_joined", peer=b_node), "A seeing B")
    wait_until(lambda: events(b, "peer_joined", peer=a_node), "B seeing A")

    # One revoke reaches every worker.
    late = str(uuid.uuid4())
    client.revoke(late)
    for worker in (a, b):
        wait_for_events(worker, "tasks_revoked", 1, task_ids=[late])

    # An election all stand in has one winner, the same for both.
    election = f"e-{tag}"
    with broker.connection() as connection:
        broadcast(connection, "election", {"id": election, "topic": "test", "action": None})
    decisions = [wait_for_events(w, "election_decided", 1, id=election)[0] for w in (a, b)]
    assert len({d["leader"] for d in decisions}) == 1
    assert sorted(d["won"] for d in decisions) == [False, True]

    # A worker killed outright is reported lost by both, in under LOST_WITHIN seconds.
    c = start_worker("-n", c_node)
    for worker in (a, b):
        wait_for_events(worker, "peer_joined", 1, peer=c_node)
    killed = time.monotonic()
    c.proc.kill()
    for worker in (a, b):
        wait_until(partial(events, worker, "peer_lost", peer=c_node), "C lost", LOST_WITHIN)
    detected = time.monotonic() - killed
    print(f"\n[{broker.kind}] SIGKILLed worker reported lost after {detected:.2f} s")
    assert detected < LOST_WITHIN

    # A warm stop says goodbye: left, not lost.
    assert stop(b) == 0
    wait_until(lambda: events(a, "peer_left", peer=b_node), "A seeing B leave")
    assert not events(a, "peer_lost", peer=b_node)


def test_without_gossip_mingle_and_control_the_steps_are_shown_disabled_with_the_reason(
    tmp_path: Path,
) -> None:
    flags = ["--without", "gossip", "--without", "mingle", "--without", "control"]

    def graph(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bootkit", "graph", *args, *flags],
            env=worker_env(tmp_path, "graph"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        )
        return done.stdout

    steps: dict[str, Any] = {s["name"]: s for s in json.loads(graph("--json"))["steps"]}
    dot = graph("--dot")
    for name, flag in (
        ("gossip.peers", "gossip"),
        ("mingle.sync", "mingle"),
        ("control.pidbox", "control"),
    ):
        assert steps[name]["status"] == "disabled"
        assert f"--without {flag}" in steps[name]["reason"]
        assert f"disabled: disabled by --without {flag} (command line)" in dot
    assert steps["heartbeat.beat"]["status"] == "enabled"
