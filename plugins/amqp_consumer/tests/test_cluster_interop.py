"""A bootkit worker and a real Celery 5.7 worker in one cluster, on RabbitMQ and Redis:
each sees the other through gossip, Celery's mingle takes the bootkit worker's revoked
ids, and one pidbox broadcast reaches both."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.pidbox import call
from e2e_support import RESULTS_URL, TESTS, WAIT, Broker, StartWorker, events, wait_until


class CeleryWorker:
    """``celery worker`` with gossip, mingle and heartbeat on, logging at debug level."""

    def __init__(self, tmp_path: Path, broker: Broker, queue: str) -> None:
        self.node = f"celery-{uuid.uuid4().hex[:8]}@host"
        self.log = tmp_path / "celery-worker.log"
        command = [sys.executable, "-m", "celery", "-A", "celery_peer", "-b", broker.url]
        command += ["--result-backend", RESULTS_URL, "worker", "-P", "solo", "-Q", queue]
        command += ["-n", self.node, "-l", "debug"]
        env = {**os.environ, "PYTHONPATH": str(TESTS)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        # Killed, not stopped: Celery's own stop on RabbitMQ takes over 5 s.
        self.proc.kill()
        self.proc.wait(timeout=WAIT)


def test_bootkit_and_celery_workers_gossip_mingle_and_answer_one_broadcast(
    start_worker: StartWorker,
    broker: Broker,
    client: App,
    tmp_path: Path,
    queue: str,
) -> None:
    node = f"bootkit-{uuid.uuid4().hex[:8]}@host"
    ours = start_worker("-n", node)
    revoked = str(uuid.uuid4())
    client.revoke(revoked)
    wait_until(lambda: events(ours, "tasks_revoked"), "the revoke on the bootkit worker")

    theirs = CeleryWorker(tmp_path, broker, queue)
    try:
        wait_until(lambda: theirs.logged(" ready."), "the Celery worker ready", timeout=60)
        # Celery's gossip saw our heartbeats; ours saw Celery's.
        wait_until(lambda: theirs.logged(f"{node} joined the party"), "Celery seeing bootkit")
        wait_until(lambda: events(ours, "peer_joined", peer=theirs.node), "bootkit seeing Celery")
        # Celery's mingle asked us for revoked ids at its start and kept ours.
        with broker.connection() as connection:
            replies = call(connection, "revoked", destination=[theirs.node], timeout=WAIT)
            assert replies, "the Celery worker did not answer `revoked`"
            assert revoked in replies[0][theirs.node]

            pongs = call(connection, "ping", destination=[node, theirs.node], timeout=WAIT)
        assert {n for reply in pongs for n in reply} == {node, theirs.node}
    finally:
        theirs.kill()
