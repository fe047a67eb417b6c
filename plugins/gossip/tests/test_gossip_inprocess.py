"""The steps in one process on kombu's ``memory://`` transport, with the worker's real
steps around them and a listener plugin implementing gossip's hooks: what another
plugin sees. The other worker is played by the test, with the worker's own parts (an
`EventDispatcher` for its events, a `ControlServer` to answer mingle's hello)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection

import bootkit_gossip.plugin
from bootkit import hookimpl
from bootkit.testing import capture_logs, make_settings, running
from bootkit_amqp_consumer.clock import LamportClock
from bootkit_amqp_consumer.control import Command, Commands, ControlServer
from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.pidbox import call
from bootkit_amqp_consumer.steps import STEPS
from bootkit_gossip import Peer
from bootkit_gossip.gossip import Gossip
from bootkit_gossip.mingle import Mingle

WAIT = 10.0  # seconds any single wait may take


class Listener:
    """A plugin implementing gossip's hooks; records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.changed = threading.Condition()

    def _record(self, name: str, value: Any) -> None:
        with self.changed:
            self.calls.append((name, value))
            self.changed.notify_all()

    @hookimpl
    def bootkit_gossip_peer_joined(self, peer: Peer) -> None:
        self._record("joined", peer)

    @hookimpl
    def bootkit_gossip_peer_left(self, peer: Peer) -> None:
        self._record("left", peer)

    @hookimpl
    def bootkit_gossip_peer_lost(self, peer: Peer) -> None:
        self._record("lost", peer)

    @hookimpl
    def bootkit_gossip_elected(
        self, id: str, topic: str, action: Any, leader: str, won: bool
    ) -> None:
        self._record("elected", {"id": id, "topic": topic, "leader": leader, "won": won})

    def wait(self, name: str, count: int = 1) -> Any:
        """The `count`-th call of hook `name`, once it came."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: len([v for n, v in self.calls if n == name]) >= count, WAIT
            )
            assert found, f"no {name} call #{count} within {WAIT}s; calls: {self.calls}"
            return [v for n, v in self.calls if n == name][count - 1]


@contextlib.contextmanager
def worker(tmp_path: Path, listener: Listener, **options: Any) -> Iterator[str]:
    """The worker's steps with mingle and gossip on ``memory://``; yields its node name."""
    node = f"me-{uuid.uuid4().hex[:8]}@test"
    settings = make_settings(
        tmp_path,
        options={
            "broker": "memory://",
            "hostname": node,
            "queues": (f"q-{node}",),
            "pool": "threads",
            "concurrency": 1,
            **options,
        },
    )
    with running(
        *STEPS, Gossip, Mingle, settings=settings, plugins=[bootkit_gossip.plugin, listener]
    ):
        yield node


def peer_events(connection: Any, clock: int = 0) -> EventDispatcher:
    """The events of another worker, ``peer-*@test``."""
    return EventDispatcher(
        connection, hostname=f"peer-{uuid.uuid4().hex[:8]}@test", clock=LamportClock(clock)
    )


def test_another_plugin_hears_a_peer_join_go_silent_come_back_and_leave(tmp_path: Path) -> None:
    listener = Listener()
    with worker(tmp_path, listener), Connection("memory://") as connection:
        peer = peer_events(connection)
        peer.send("worker-online", **peer.worker_fields(freq=0.2))
        joined: Peer = listener.wait("joined")
        assert (joined.hostname, joined.pid, joined.freq) == (peer.hostname, os.getpid(), 0.2)
        assert joined.sw_ident == "py-bootkit"

        silent_since = time.monotonic()
        lost: Peer = listener.wait("lost")  # nothing sent for 2 x 0.2 s
        assert lost.hostname == peer.hostname
        assert not lost.alive
        assert time.monotonic() - silent_since < 0.2 * 2 + 0.25 + 0.5

        peer.send("worker-heartbeat", **peer.worker_fields(freq=5.0))
        assert listener.wait("joined", 2).freq == 5.0
        peer.send("worker-offline", **peer.worker_fields(freq=5.0))
        assert listener.wait("left").hostname == peer.hostname
    assert [name for name, _ in listener.calls] == ["joined", "lost", "joined", "left"]


@pytest.mark.parametrize("peer_clock", [0, 10**6], ids=["peer-wins", "we-win"])
def test_an_election_both_stand_in_names_the_lowest_clock(tmp_path: Path, peer_clock: int) -> None:
    listener = Listener()
    with worker(tmp_path, listener) as node, Connection("memory://") as connection:
        peer = peer_events(connection)
        peer.send("worker-heartbeat", **peer.worker_fields(freq=30.0))
        listener.wait("joined")
        (reply,) = call(
            connection, "election", {"id": "e1", "topic": "t"}, destination=[node], timeout=WAIT
        )
        assert reply == {node: {"ok": "standing in election e1"}}
        # The peer stands too; its clock was at 2 or past a million when it did.
        peer.clock.adjust(peer_clock)
        peer.send("worker-elect", id="e1", topic="t", action=None, cver=1)
        peer.send("worker-elect-ack", id="e1")
        decided = listener.wait("elected")
    peer_wins = peer_clock == 0
    winner = f"{peer.hostname}.{os.getpid()}" if peer_wins else f"{node}.{os.getpid()}"
    assert decided == {"id": "e1", "topic": "t", "leader": winner, "won": not peer_wins}


class HelloPeer:
    """Another worker's control server that answers mingle's hello, in a thread."""

    def __init__(self, connection: Any, revoked: Mapping[str, list[Any]], clock: int) -> None:
        self.node = f"peer-{uuid.uuid4().hex[:8]}@test"
        self.connection = connection
        commands = Commands()
        commands.register(
            Command("hello", lambda _: {"revoked": dict(revoked), "clock": clock}, "control")
        )
        self.server = ControlServer(
            connection=connection,
            nodename=self.node,
            commands=commands,
            allow=frozenset(),
            clock=LamportClock(),
        )
        self.server.start()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=0.02)

    def close(self) -> None:
        self.done.set()
        self.thread.join(WAIT)
        self.server.stop()


def test_mingle_takes_a_peers_revoked_ids_and_clock_and_stops_waiting_once_replies_stop(
    tmp_path: Path,
) -> None:
    task_id = str(uuid.uuid4())
    with Connection("memory://") as connection:
        peer = HelloPeer(connection, {task_id: [time.time(), task_id]}, clock=500)
        try:
            with (
                capture_logs() as logs,
                worker(tmp_path, Listener(), mingle_timeout=5.0) as node,
                Connection("memory://") as client,
            ):
                (revoked,) = call(client, "revoked", destination=[node], timeout=WAIT)
                (clock,) = call(client, "clock", destination=[node], timeout=WAIT)
        finally:
            peer.close()
    (synced,) = [e for e in logs if e["event"] == "mingle_synced"]
    assert synced["nodes"] == [peer.node]
    assert synced["revoked_new"] == 1
    assert synced["rule"] == "quiet_window"  # memory:// cannot say how many peers there are
    assert synced["seconds"] < 1.0, synced  # the quiet window, not the 5 s timeout
    assert task_id in revoked[node]
    assert clock[node]["clock"] > 500
