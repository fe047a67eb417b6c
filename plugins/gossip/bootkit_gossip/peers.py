"""Membership as plain logic: worker events and receive times in; joins, leaves and
losses out.

Times are the receiver's own `time.monotonic()`, never the sender's timestamp, so
clock skew between machines cannot make a peer look alive or lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_FREQ = 2.0  # a worker event without `freq`: Celery's default heartbeat interval
LIVENESS = 2.0  # a peer is alive while now < last heard + freq * LIVENESS (as Celery's monitors)
WORKER_EVENTS = ("worker-online", "worker-heartbeat", "worker-offline")


@dataclass
class Peer:
    """Another worker, as its events describe it.

    Attributes:
        hostname: its node name (``name@host``).
        pid: its process id, as its events say.
        freq: its heartbeat interval in seconds.
        clock: the Lamport clock of its last event.
        last_heard: when its last event arrived (this process's `time.monotonic()`).
        sw_ident: the software it runs (``py-bootkit``, ``py-celery``).
        alive: False once it left or was lost.
    """

    hostname: str
    pid: int | None = None
    freq: float = DEFAULT_FREQ
    clock: int = 0
    last_heard: float = 0.0
    sw_ident: str | None = None
    alive: bool = True

    def expires(self) -> float:
        """When the peer counts as lost unless it is heard from again."""
        return self.last_heard + self.freq * LIVENESS


@dataclass(frozen=True)
class Change:
    """A peer joined, left or was lost.

    Attributes:
        peer: a copy taken at the change (the table keeps updating its own).
        silent: seconds nothing had been heard from the peer before the change; None
            on first contact.
    """

    kind: Literal["joined", "left", "lost"]
    peer: Peer
    silent: float | None


class PeerTable:
    """Who is in the cluster besides `me`; not thread-safe (the caller locks)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.peers: dict[str, Peer] = {}

    def observe(self, event: Mapping[str, Any], now: float) -> Change | None:
        """Take a worker event received at `now`; the change it makes, if any.

        A peer joins on its first event, on its first event after it left or was lost,
        and when its pid changes (it restarted under the same name faster than it could
        be found lost). It leaves on ``worker-offline``. Our own events are ignored.
        """
        hostname, kind = event.get("hostname"), event.get("type")
        if not isinstance(hostname, str) or hostname == self.me or kind not in WORKER_EVENTS:
            return None
        peer = self.peers.get(hostname)
        silent = None if peer is None else now - peer.last_heard
        if kind == "worker-offline":
            if peer is None or not peer.alive:
                return None
            peer.alive, peer.last_heard = False, now
            return Change("left", dataclasses.replace(peer), silent)
        pid = event.get("pid")
        restarted = peer is not None and isinstance(pid, int) and peer.pid not in (None, pid)
        joined = peer is None or not peer.alive or restarted
        if peer is None:
            peer = self.peers[hostname] = Peer(hostname)
        freq, clock, sw_ident = event.get("freq"), event.get("clock"), event.get("sw_ident")
        if isinstance(freq, int | float) and freq > 0:
            peer.freq = float(freq)
        peer.pid = pid if isinstance(pid, int) else peer.pid
        peer.clock = clock if isinstance(clock, int) else peer.clock
        peer.sw_ident = sw_ident if isinstance(sw_ident, str) else peer.sw_ident
        peer.last_heard, peer.alive = now, True
        return Change("joined", dataclasses.replace(peer), silent) if joined else None

    def expire(self, now: float) -> list[Change]:
        """Mark lost, and report, the alive peers not heard from within twice their interval."""
        changes = []
        for peer in self.peers.values():
            if peer.alive and now >= peer.expires():
                peer.alive = False
                changes.append(Change("lost", dataclasses.replace(peer), now - peer.last_heard))
        return changes

    def alive(self) -> list[str]:
        """The hostnames of the peers alive now."""
        return [p.hostname for p in self.peers.values() if p.alive]
