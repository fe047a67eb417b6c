"""The consumer blueprint's cluster steps: ``mingle.sync`` and ``gossip.peers``.

Both use the consumer's broker connection, which one thread at a time may use:
mingle runs before ``amqp.tasks``; gossip declares its queue after ``control.pidbox``
and before ``amqp.loop``, whose thread then runs gossip's callbacks. The lost-peer
check and election deadlines run on the worker's timer.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from kombu.messaging import Consumer

from bootkit import Context, Step, StopReason, logger
from bootkit_amqp_consumer.control import Command, Commands
from bootkit_amqp_consumer.errors import BrokerConnectionLostError
from bootkit_amqp_consumer.events import EventDispatcher, event_queue
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pidbox import call
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.steps import Connection
from bootkit_amqp_consumer.timer import Entry, Timer
from bootkit_gossip.peers import Election, Peer, PeerTable
from bootkit_gossip.plugin import DEFAULT_MINGLE_TIMEOUT

CHECK_INTERVAL = 0.25  # how often lost peers and election deadlines are looked at
STALE_ELECTION = 60.0  # an election this worker never stood in is forgotten after this
MINGLE_REVOKED_MAX = 10_000  # revoked ids sent in our hello (the newest)
MINGLE_QUIET = 0.1  # with an unknown number of peers: stop once replies stop for this long


class Mingle(Step):
    """At consumer start, swap revoked ids and clocks with the workers already running.

    It waits only for the peers it expects: on AMQP, the consumers of this worker's
    task queues; on Redis, the subscribers the hello reached. With none, it returns
    at once; with an unknown number, once replies stop coming for a moment.
    """

    name = "mingle.sync"
    blueprint = "consumer"
    requires = ("amqp.connection",)
    before = ("amqp.tasks",)

    def start(self, ctx: Context) -> None:
        config = ctx.get(WorkerConfig)
        state = ctx.get(WorkerState)
        connection = ctx.get(Connection).kombu
        timeout = float(ctx.settings.option("mingle_timeout", DEFAULT_MINGLE_TIMEOUT))
        log = logger().bind(hostname=config.hostname)
        began = time.monotonic()
        errors = tuple(connection.connection_errors)
        try:
            expected = expected_peers(connection, config.queues)
            replies = (
                []
                if expected == 0
                else call(
                    connection,
                    "hello",
                    {
                        "from_node": config.hostname,
                        "revoked": state.revoked_wire(MINGLE_REVOKED_MAX),
                    },
                    timeout=timeout,
                    expected=expected,
                    quiet=MINGLE_QUIET,
                    clock=state.clock.forward(),
                )
            )
        except errors as exc:
            raise BrokerConnectionLostError(f"mingle: {type(exc).__name__}: {exc}") from exc
        nodes, new = [], 0
        for reply in replies:
            for node, answer in reply.items():
                if node == config.hostname or not isinstance(answer, dict):
                    continue
                nodes.append(node)
                state.clock.adjust(answer.get("clock"))
                revoked = answer.get("revoked")
                new += state.merge_revoked(revoked) if isinstance(revoked, dict) else 0
        log.info(
            "mingle_synced",
            nodes=sorted(nodes),
            expected=expected,
            revoked_new=new,
            seconds=round(time.monotonic() - began, 6),
        )

    def stop(self, ctx: Context, reason: StopReason) -> None:
        pass


def expected_peers(connection: Any, queues: tuple[str, ...]) -> int | None:
    """How many workers should answer a hello, when the broker can say; None otherwise.

    AMQP: the most consumers any of our task queues has (we do not consume them yet).
    Redis tells after the fact (how many the hello reached), so None here.
    """
    if connection.transport.driver_type != "amqp":
        return None
    most = 0
    for name in queues:
        channel = connection.channel()
        try:
            _, _, consumers = channel.queue_declare(name, passive=True)
            most = max(most, int(consumers))
        except connection.channel_errors:
            pass  # not declared yet: nobody consumes it
        finally:
            with contextlib.suppress(Exception):
                channel.close()
    return most


class Gossip(Step):
    """Knows the other workers from their events: joins, leaves, losses, elections."""

    name = "gossip.peers"
    blueprint = "consumer"
    requires = ("amqp.connection", "events.dispatcher")
    after = ("amqp.tasks", "control.pidbox")
    before = ("amqp.loop",)
    stop_timeout: ClassVar[float | None] = 10.0

    def start(self, ctx: Context) -> None:
        config = ctx.get(WorkerConfig)
        self.me = config.hostname
        self.candidate = f"{self.me}.{os.getpid()}"
        self.hook = ctx.hook
        self.dispatcher = ctx.get(EventDispatcher)
        self.clock = ctx.get(WorkerState).clock
        self.table = PeerTable(self.me)
        self.elections: dict[str, tuple[float, Election]] = {}
        self.lock = threading.Lock()
        self.log = logger().bind(hostname=self.me)
        connection = ctx.get(Connection).kombu
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
        """Take one worker event received at `now`."""
        self.clock.adjust(event.get("clock"))
        kind = event.get("type")
        if kind == "worker-elect":
            self._on_elect(event, now)
        elif kind == "worker-elect-ack":
            self._on_elect_ack(event, now)
        elif kind in ("worker-online", "worker-heartbeat", "worker-offline"):
            with self.lock:
                change = self.table.observe(event, now)
            if change is not None:
                what, peer = change
                self.log.info(f"peer_{what}", peer=peer.hostname, pid=peer.pid)
                self._call(f"bootkit_gossip_peer_{what}", peer=peer)

    # -- the timer's thread --------------------------------------------------------------

    def check(self) -> None:
        """Report peers that missed their heartbeats; settle elections whose time came."""
        now = time.monotonic()
        with self.lock:
            lost = self.table.expire(now)
        for peer in lost:
            self.log.warning(
                "peer_lost", peer=peer.hostname, seconds=round(now - peer.last_heard, 3)
            )
            self._call("bootkit_gossip_peer_lost", peer=peer)
        self._settle(now)

    def alive(self) -> list[Peer]:
        with self.lock:
            return self.table.alive()

    # -- elections -----------------------------------------------------------------------

    def stand(self, id: str, topic: str, action: Any = None) -> None:
        """Stand in election `id`; the outcome is logged and given to the elected hook."""
        with self.lock:
            _, election = self.elections.setdefault(id, (time.monotonic(), Election(id)))
            election.topic, election.action, election.stood = topic, action, True
        self.dispatcher.send("worker-elect", id=id, topic=topic, action=action, cver=1)

    def _election_command(self, arguments: Mapping[str, Any]) -> Any:
        id_, topic = arguments.get("id"), arguments.get("topic")
        if not isinstance(id_, str) or not id_ or not isinstance(topic, str):
            return {"error": "election needs an id and a topic (strings)"}
        self.stand(id_, topic, arguments.get("action"))
        return {"ok": f"standing in election {id_}"}

    def _on_elect(self, event: Mapping[str, Any], now: float) -> None:
        id_, clock, hostname, pid = (event.get(k) for k in ("id", "clock", "hostname", "pid"))
        if not isinstance(id_, str) or not isinstance(clock, int) or not isinstance(hostname, str):
            self.log.warning("election_request_malformed", fields=sorted(event))
            return
        with self.lock:
            _, election = self.elections.setdefault(id_, (now, Election(id_)))
            election.candidates.add((clock, f"{hostname}.{pid}"))
            if not election.stood:
                election.topic, election.action = str(event.get("topic", "")), event.get("action")
        self.dispatcher.send("worker-elect-ack", id=id_)
        self._settle(now)

    def _on_elect_ack(self, event: Mapping[str, Any], now: float) -> None:
        id_, hostname = event.get("id"), event.get("hostname")
        with self.lock:
            entry = self.elections.get(id_) if isinstance(id_, str) else None
            if entry is None or not isinstance(hostname, str):
                return
            entry[1].acks.add(hostname)
        self._settle(now)

    def _settle(self, now: float) -> None:
        decided: list[Election] = []
        with self.lock:
            everyone = [p.hostname for p in self.table.alive()] + [self.me]
            for id_, (opened, election) in list(self.elections.items()):
                if election.decided(everyone, now):
                    decided.append(election)
                    del self.elections[id_]
                elif not election.stood and now - opened > STALE_ELECTION:
                    del self.elections[id_]
        for election in decided:
            leader = election.leader()
            won = leader == self.candidate
            self.log.info(
                "election_decided", id=election.id, topic=election.topic, leader=leader, won=won
            )
            self._call(
                "bootkit_gossip_elected",
                id=election.id,
                topic=election.topic,
                action=election.action,
                leader=leader,
                won=won,
            )

    def _call(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self.hook, hook, None)
        if caller is None:
            return  # run without the plugin manager (the hooks are not declared)
        try:
            caller(**kwargs)
        except Exception:
            self.log.exception("gossip_hook_failed", hook=hook)
