"""Membership and elections as plain logic: events and times in, decisions out.

Times are the receiver's own `time.monotonic()`, never the sender's timestamp, so
clock skew between machines cannot make a peer look alive or lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FREQ = 2.0  # a worker event without `freq`: Celery's default heartbeat interval
LIVENESS = 2.0  # a peer is alive while now < last heard + freq * LIVENESS (as Celery's monitors)
DECIDE_WITHOUT_ALL_CANDIDATES = 1.0  # seconds to wait for other candidates once acks are in


@dataclass
class Peer:
    """Another worker, as its events describe it."""

    hostname: str
    pid: int | None = None
    freq: float = DEFAULT_FREQ
    clock: int = 0
    last_heard: float = 0.0
    sw_ident: str | None = None
    alive: bool = True

    def expires(self) -> float:
        return self.last_heard + self.freq * LIVENESS


class PeerTable:
    """Who is in the cluster besides `me`."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.peers: dict[str, Peer] = {}

    def observe(self, event: Mapping[str, Any], now: float) -> tuple[str, Peer] | None:
        """Take a worker event; ``("joined", peer)`` or ``("left", peer)`` when that changed."""
        hostname = event.get("hostname")
        if not isinstance(hostname, str) or hostname == self.me:
            return None
        peer = self.peers.get(hostname)
        if event.get("type") == "worker-offline":
            if peer is None or not peer.alive:
                return None
            peer.alive = False
            return "left", peer
        joined = peer is None or not peer.alive
        if peer is None:
            peer = self.peers[hostname] = Peer(hostname)
        freq = event.get("freq")
        if isinstance(freq, int | float) and freq > 0:
            peer.freq = float(freq)
        pid, clock = event.get("pid"), event.get("clock")
        peer.pid = pid if isinstance(pid, int) else peer.pid
        peer.clock = clock if isinstance(clock, int) else peer.clock
        sw_ident = event.get("sw_ident")
        peer.sw_ident = sw_ident if isinstance(sw_ident, str) else peer.sw_ident
        peer.last_heard = now
        peer.alive = True
        return ("joined", peer) if joined else None

    def expire(self, now: float) -> list[Peer]:
        """Mark lost, and return, the alive peers not heard from in time."""
        lost = [p for p in self.peers.values() if p.alive and now >= p.expires()]
        for peer in lost:
            peer.alive = False
        return lost

    def alive(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.alive]


@dataclass
class Election:
    """One election (by id): who stands, who acknowledged, and since when all did.

    Every worker acknowledges every ``worker-elect`` it sees. A worker that stands
    decides once every alive worker (itself included) acknowledged its request and
    either every alive worker also stood, or `DECIDE_WITHOUT_ALL_CANDIDATES` seconds
    passed since the acknowledgements were complete. The lowest (clock, "host.pid")
    wins, as in Celery, so every worker that saw the same requests names the same one.
    """

    id: str
    topic: str = ""
    action: Any = None
    candidates: set[tuple[int, str]] = field(default_factory=set)
    acks: set[str] = field(default_factory=set)
    stood: bool = False
    acked_all_at: float | None = None

    def leader(self) -> str:
        """The winning "host.pid"."""
        return min(self.candidates)[1]

    def decided(self, alive: Iterable[str], now: float) -> bool:
        """True once this worker (which stood) may name the leader."""
        if not self.stood or not self.candidates:
            return False
        everyone = set(alive)
        if not everyone <= self.acks:
            return False
        if self.acked_all_at is None:
            self.acked_all_at = now
        standing = {candidate.rsplit(".", 1)[0] for _, candidate in self.candidates}
        return everyone <= standing or now - self.acked_all_at >= DECIDE_WITHOUT_ALL_CANDIDATES
