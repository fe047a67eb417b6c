"""``gossip.peers``: the other workers, known from their events: who joined, left or
was lost, and who leads an election.

Like Celery's gossip, it consumes ``worker.#`` from the ``celeryev`` exchange into a
queue of its own, ``celeryev.<uuid>``, on the consumer connection. That connection is
used by one thread at a time: the queue is declared after ``control.pidbox`` and before
``amqp.loop``, whose thread then runs the callbacks. Lost peers and election deadlines
are looked at on the worker's timer every `CHECK_INTERVAL` seconds, so a worker that
goes silent is reported within ``freq * 2 + CHECK_INTERVAL`` of its last event (4.25 s
at the default 2 s heartbeat; Celery checks every 5 s, up to 9 s).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from kombu.messaging import Consumer

from bootkit import Condition, Context, Settings, Step, StopReason, logger
from bootkit_amqp_consumer.control import Command, Commands
from bootkit_amqp_consumer.errors import BrokerConnectionLostError
from bootkit_amqp_consumer.events import EventDispatcher, event_queue
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.steps import Connection
from bootkit_amqp_consumer.timer import Entry, Timer
from bootkit_gossip.election import Election
from bootkit_gossip.peers import Change, PeerTable

CHECK_INTERVAL = 0.25  # seconds between looks at lost peers and election deadlines
STALE_ELECTION = 60.0  # an election this worker did not stand in is forgotten after this


class Gossip(Step):
    """Keeps the peer table, reports its changes, and takes part in elections."""

    name = "gossip.peers"
    blueprint = "consumer"
    requires = ("amqp.connection", "events.dispatcher")
    after = ("amqp.tasks", "control.pidbox")
    before = ("amqp.loop",)

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        disabled = settings.disabled_by("events.dispatcher")
        if disabled is not None:  # it acknowledges elections with events
            return Condition.off(f"it needs events.dispatcher, disabled by {disabled.describe()}")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        self.me = ctx.get(WorkerConfig).hostname
        self.hook = ctx.hook
        self.dispatcher = ctx.get(EventDispatcher)
        self.candidate = f"{self.me}.{self.dispatcher.pid}"  # as our worker-elect names us
        self.clock = ctx.get(WorkerState).clock
        self.table = PeerTable(self.me)
        self.elections: dict[str, Election] = {}
        self.lock = threading.Lock()  # the loop thread receives, the timer thread checks
        self.log = logger().bind(hostname=self.me)
        connection = ctx.get(Connection).kombu
        try:
            self.channel = connection.channel()
            queue = event_queue(connection, f"celeryev.{uuid.uuid4()}", "worker.#")
            consumer = Consumer(
                self.channel,
                [queue],
                on_message=self._on_message,
                no_ack=True,
                accept=["application/json"],
            )
            consumer.consume()
        except (*connection.connection_errors, *connection.channel_errors) as exc:
            raise BrokerConnectionLostError(f"gossip: {type(exc).__name__}: {exc}") from exc
        self.commands = ctx.get(Commands)
        self.commands.register(
            Command(
                "election",
                self._election_command,
                "control",
                help="Stand in election ID on TOPIC; the lowest (clock, host.pid) wins.",
            )
        )
        self.entry: Entry = ctx.get(Timer).call_repeatedly(CHECK_INTERVAL, self.check)

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.entry.cancel()
        self.commands.unregister("election")
        with contextlib.suppress(Exception):  # a dead connection took the channel with it
            self.channel.close()

    # -- receiving (the consumer loop's thread) ----------------------------------------

    def _on_message(self, message: Any) -> None:
        if str((message.delivery_info or {}).get("routing_key", "")).startswith("task"):
            return  # Redis without fanout patterns delivers every event
        try:
            body = message.decode()
        except Exception as exc:
            self.log.warning("gossip_event_rejected", reason=f"{type(exc).__name__}: {exc}")
            return
        for event in body if isinstance(body, list) else [body]:
            if isinstance(event, dict):
                self.receive(event, time.monotonic())

    def receive(self, event: Mapping[str, Any], now: float) -> None:
        """Take one worker event received at `now` (monotonic), ours included."""
        self.clock.adjust(event.get("clock"))
        kind = event.get("type")
        if kind == "worker-elect":
            self._on_elect(event, now)
        elif kind == "worker-elect-ack":
            self._on_elect_ack(event, now)
        else:
            with self.lock:
                change = self.table.observe(event, now)
            if change is not None:
                self._report(change)

    # -- the timer's thread --------------------------------------------------------------

    def check(self) -> None:
        """Report the peers that missed their heartbeats; settle elections whose time came."""
        now = time.monotonic()
        with self.lock:
            lost = self.table.expire(now)
        for change in lost:
            self._report(change)
        self._settle(now)

    def _report(self, change: Change) -> None:
        peer = change.peer
        seconds = None if change.silent is None else round(change.silent, 3)
        fields = {"peer": peer.hostname, "pid": peer.pid, "sw_ident": peer.sw_ident}
        try:
            if change.kind == "joined":
                self.log.info("peer_joined", **fields, seconds=seconds)
                self.hook.bootkit_gossip_peer_joined(peer=peer)
            elif change.kind == "left":
                self.log.info("peer_left", **fields, seconds=seconds)
                self.hook.bootkit_gossip_peer_left(peer=peer)
            else:
                self.log.warning("peer_lost", **fields, seconds=seconds)
                self.hook.bootkit_gossip_peer_lost(peer=peer)
        except Exception:  # another plugin's hook must not stop gossip
            self.log.exception("gossip_hook_failed", change=change.kind, peer=peer.hostname)

    # -- elections -----------------------------------------------------------------------

    def stand(self, id: str, topic: str, action: Any = None) -> bool:
        """Stand in election `id` (once); the outcome is logged and given to the
        ``bootkit_gossip_elected`` hook. False when this worker stands in it already."""
        now = time.monotonic()
        with self.lock:
            election = self.elections.setdefault(id, Election(id, opened=now))
            if election.stood_at is not None:
                return False
            election.topic, election.action, election.stood_at = topic, action, now
        self.dispatcher.send("worker-elect", id=id, topic=topic, action=action, cver=1)
        return True

    def _election_command(self, arguments: Mapping[str, Any]) -> Any:
        id_, topic = arguments.get("id"), arguments.get("topic")
        if not isinstance(id_, str) or not id_ or not isinstance(topic, str):
            return {"error": "election needs an id and a topic (strings)"}
        if not self.stand(id_, topic, arguments.get("action")):
            return {"error": f"already standing in election {id_}"}
        return {"ok": f"standing in election {id_}"}

    def _on_elect(self, event: Mapping[str, Any], now: float) -> None:
        id_, clock, hostname, pid = (event.get(k) for k in ("id", "clock", "hostname", "pid"))
        if not isinstance(id_, str) or not isinstance(clock, int) or not isinstance(hostname, str):
            self.log.warning("election_request_malformed", fields=sorted(event))
            return
        with self.lock:
            election = self.elections.setdefault(id_, Election(id_, opened=now))
            election.candidates.add((clock, f"{hostname}.{pid}"))
            if election.stood_at is None:
                election.topic, election.action = str(event.get("topic", "")), event.get("action")
        self.dispatcher.send("worker-elect-ack", id=id_)
        self._settle(now)

    def _on_elect_ack(self, event: Mapping[str, Any], now: float) -> None:
        id_, hostname = event.get("id"), event.get("hostname")
        if not isinstance(id_, str) or not isinstance(hostname, str):
            return
        with self.lock:
            self.elections.setdefault(id_, Election(id_, opened=now)).acks.add(hostname)
        self._settle(now)

    def _settle(self, now: float) -> None:
        decided: list[tuple[Election, list[str]]] = []
        with self.lock:
            everyone = [*self.table.alive(), self.me]
            for id_, election in list(self.elections.items()):
                if election.decided(everyone, now):
                    decided.append((election, election.missing(everyone)))
                    del self.elections[id_]
                elif election.stood_at is None and now - election.opened > STALE_ELECTION:
                    del self.elections[id_]
        for election, missing in decided:
            leader = election.leader()
            won = leader == self.candidate
            self.log.info(
                "election_decided",
                id=election.id,
                topic=election.topic,
                leader=leader,
                won=won,
                candidates=len(election.candidates),
                missing_acks=missing,
            )
            try:
                self.hook.bootkit_gossip_elected(
                    id=election.id,
                    topic=election.topic,
                    action=election.action,
                    leader=leader,
                    won=won,
                )
            except Exception:  # another plugin's hook must not stop gossip
                self.log.exception("gossip_hook_failed", election=election.id)
