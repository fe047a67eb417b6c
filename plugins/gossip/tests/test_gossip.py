"""Workers in one cluster, on RabbitMQ and on Redis: mingle, gossip, revoke, election,
a worker killed with SIGKILL and one stopped warm; a Celery worker among them; the
steps turned off from the command line."""

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
    run_bootkit,
    stop,
    wait_for_events,
    wait_until,
    worker_env,
)
from test_cluster_interop import CeleryWorker
from tests.support import one_error_line

LOST_WITHIN = 5.0  # seconds from SIGKILL to peer_lost, at the default 2 s heartbeat
MINGLE_TIMEOUT = 5.0  # given to later workers: returning well before it is no accident


def revoked_on(broker: Broker, node: str) -> list[str]:
    with broker.connection() as connection:
        replies = call(connection, "revoked", destination=[node], timeout=WAIT)
    return list(replies[0][node]) if replies else []


def heard_from(synced: dict[str, Any], node: str) -> bool:
    """Whether mingle's replies came from `node`. On RabbitMQ it stops after as many
    replies as its queues have consumers, so a worker of another test on the shared
    broker may have answered first: then `node` may be missing, never everyone."""
    assert synced["nodes"], synced
    return node in synced["nodes"]


def test_workers_mingle_gossip_revoke_elect_and_notice_loss(
    start_worker: StartWorker, broker: Broker, client: App
) -> None:
    tag = uuid.uuid4().hex[:6]
    a_node, b_node, c_node = (f"{n}-{tag}@host" for n in "abc")
    a = start_worker("-n", a_node)
    (alone,) = wait_for_events(a, "mingle_synced", 1)
    assert alone["seconds"] < 0.1, alone  # nobody to wait for
    if broker.kind == "rabbitmq":  # no other consumer of its queue: no hello sent at all
        assert (alone["expected"], alone["nodes"]) == (0, [])

    early = str(uuid.uuid4())
    client.revoke(early)
    wait_for_events(a, "tasks_revoked", 1, task_ids=[early])

    # B starts later: mingle brings it A's revoked id, and waits only for A.
    b = start_worker("-n", b_node, "--mingle-timeout", str(MINGLE_TIMEOUT))
    (synced,) = wait_for_events(b, "mingle_synced", 1)
    print(f"\n[{broker.kind}] mingle with one peer: {synced['seconds']:.3f} s ({synced['rule']})")
    assert heard_from(synced, a_node) or broker.kind == "rabbitmq"
    assert synced["revoked_new"] >= 1
    assert synced["seconds"] < 0.5, synced
    assert early in revoked_on(broker, b_node)

    # They see each other through their heartbeats.
    wait_until(lambda: events(a, "peer_joined", peer=b_node), "A seeing B")
    wait_until(lambda: events(b, "peer_joined", peer=a_node), "B seeing A")

    # One revoke reaches every worker.
    late = str(uuid.uuid4())
    client.revoke(late)
    for worker in (a, b):
        wait_for_events(worker, "tasks_revoked", 1, task_ids=[late])

    # An election all stand in has one winner, the same for both. (Only these two are
    # asked: workers of other tests on the broker acknowledge, but do not stand.)
    election = f"e-{tag}"
    with broker.connection() as connection:
        broadcast(
            connection,
            "election",
            {"id": election, "topic": "test", "action": None},
            destination=[a_node, b_node],
        )
    decisions = [wait_for_events(w, "election_decided", 1, id=election)[0] for w in (a, b)]
    assert len({d["leader"] for d in decisions}) == 1
    assert sorted(d["won"] for d in decisions) == [False, True]
    assert all(d["missing_acks"] == [] for d in decisions)

    # A worker killed outright is reported lost by both, in under LOST_WITHIN seconds.
    c = start_worker("-n", c_node)
    for worker in (a, b):
        wait_for_events(worker, "peer_joined", 1, peer=c_node)
    killed = time.monotonic()
    c.proc.kill()
    for worker in (a, b):
        wait_until(partial(events, worker, "peer_lost", peer=c_node), "C lost", LOST_WITHIN)
    detected = time.monotonic() - killed
    print(f"[{broker.kind}] SIGKILLed worker reported lost after {detected:.2f} s")
    assert detected < LOST_WITHIN
    (lost,) = events(a, "peer_lost", peer=c_node)
    assert lost["seconds"] >= 4.0  # twice the interval after the last heartbeat heard

    # A warm stop says goodbye: left, not lost.
    assert stop(b) == 0
    wait_until(lambda: events(a, "peer_left", peer=b_node), "A seeing B leave")
    assert not events(a, "peer_lost", peer=b_node)


def test_a_bootkit_worker_mingles_gossips_and_holds_an_election_with_a_celery_worker(
    start_worker: StartWorker, broker: Broker, client: App, tmp_path: Path, queue: str
) -> None:
    theirs = CeleryWorker(tmp_path, broker, queue)
    try:
        wait_until(lambda: theirs.logged(" ready."), "the Celery worker ready", timeout=60)
        revoked = str(uuid.uuid4())  # revoked on the Celery worker only
        with broker.connection() as connection:
            broadcast(connection, "revoke", {"task_id": revoked}, destination=[theirs.node])
        wait_until(lambda: revoked in revoked_on(broker, theirs.node), "the revoke on Celery")

        node = f"bootkit-{uuid.uuid4().hex[:8]}@host"
        ours = start_worker("-n", node, "--mingle-timeout", str(MINGLE_TIMEOUT))
        (synced,) = wait_for_events(ours, "mingle_synced", 1)
        assert synced["seconds"] < 0.5, synced
        if heard_from(synced, theirs.node) or broker.kind == "redis":
            # Celery 5.7 replies a list of ids: taken all the same.
            assert revoked in revoked_on(broker, node)
        (joined,) = wait_for_events(ours, "peer_joined", 1, peer=theirs.node)
        assert joined["sw_ident"] == "py-celery"

        # Celery acknowledges our worker-elect: the election is decided with every ack.
        # (Celery does not stand here: its gossip decides on the first ack it gets,
        # before it may have seen every request.)
        with broker.connection() as connection:
            broadcast(connection, "election", {"id": "e-celery", "topic": "t"}, destination=[node])
        (decided,) = wait_for_events(ours, "election_decided", 1, id="e-celery")
        assert decided["missing_acks"] == []
        assert (decided["won"], decided["candidates"]) == (True, 1)
    finally:
        theirs.kill()


def test_without_gossip_mingle_events_and_control_the_steps_are_shown_disabled_with_the_reason(
    tmp_path: Path,
) -> None:
    def graph(*args: str) -> str:
        done = run_bootkit(tmp_path, "graph", *args, name="graph")
        assert done.returncode == 0, done.stderr
        return done.stdout

    flags = ["--without", "gossip", "--without", "mingle", "--without", "control"]
    steps: dict[str, Any] = {s["name"]: s for s in json.loads(graph("--json", *flags))["steps"]}
    dot = graph("--dot", *flags)
    for name, flag in (
        ("gossip.peers", "gossip"),
        ("mingle.sync", "mingle"),
        ("control.pidbox", "control"),
    ):
        assert steps[name]["status"] == "disabled"
        assert f"--without {flag}" in steps[name]["reason"]
        assert f"disabled: disabled by --without {flag} (command line)" in dot
    assert steps["heartbeat.beat"]["status"] == "enabled"

    # Without events, gossip cannot acknowledge elections: it turns off and says why.
    steps = {s["name"]: s for s in json.loads(graph("--json", "--without", "events"))["steps"]}
    assert steps["gossip.peers"]["status"] == "disabled"
    assert (
        "needs events.dispatcher, disabled by --without events" in steps["gossip.peers"]["reason"]
    )
    assert steps["mingle.sync"]["status"] == "enabled"


def test_a_mingle_timeout_not_above_zero_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bootkit", "graph", "--mingle-timeout", "-1"],
        env=worker_env(tmp_path, "graph"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 2
    assert "--mingle-timeout must be above 0 seconds, got -1" in one_error_line(done.stderr)
