"""Elections as plain logic: requests, acknowledgements and times in; a leader out.

The wire is Celery's: a worker that stands sends ``worker-elect`` {id, topic, action,
cver: 1}; every worker that sees it answers ``worker-elect-ack`` {id}. The candidates
are ``(clock, "hostname.pid")`` from the requests, and the lowest wins, so every worker
that saw the same requests names the same leader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Once every alive worker acknowledged, how long to wait for the ones that did not
# stand (yet): a request sent at once by all arrives well within this.
DECIDE_WITHOUT_ALL_CANDIDATES = 1.0
# A worker that never acknowledges (it runs without gossip, yet sends heartbeats) must
# not hold an election forever: decide with the acknowledgements there are after this.
ACK_DEADLINE = 10.0


def hostname_of(candidate: str) -> str:
    """The hostname in a ``hostname.pid`` candidate (hostnames may hold dots)."""
    return candidate.rsplit(".", 1)[0]


@dataclass
class Election:
    """One election (by id), as one worker sees it.

    Attributes:
        opened: when this worker first heard of it (monotonic seconds).
        stood_at: when this worker stood in it; None if it did not (then it never
            decides: only candidates name a leader, as in Celery).
        candidates: ``(clock, "hostname.pid")`` of every request seen.
        acks: hostnames that acknowledged a request of this election.
    """

    id: str
    opened: float
    topic: str = ""
    action: Any = None
    stood_at: float | None = None
    candidates: set[tuple[int, str]] = field(default_factory=set)
    acks: set[str] = field(default_factory=set)
    acked_all_at: float | None = None

    def leader(self) -> str:
        """The winning ``hostname.pid``: the lowest (clock, "hostname.pid")."""
        return min(self.candidates)[1]

    def missing(self, everyone: Iterable[str]) -> list[str]:
        """The workers (hostnames) that have not acknowledged yet."""
        return sorted(set(everyone) - self.acks)

    def decided(self, everyone: Iterable[str], now: float) -> bool:
        """True once this worker, which stood, may name the leader.

        `everyone` is the alive workers' hostnames, this one's included. A candidate
        decides once all of them acknowledged and either all of them stood or
        `DECIDE_WITHOUT_ALL_CANDIDATES` seconds passed since the acknowledgements were
        complete; or, whatever is missing, `ACK_DEADLINE` seconds after it stood.
        """
        if self.stood_at is None or not self.candidates:
            return False
        alive = set(everyone)
        if not alive <= self.acks:
            return now - self.stood_at >= ACK_DEADLINE
        if self.acked_all_at is None:
            self.acked_all_at = now
        standing = {hostname_of(candidate) for _, candidate in self.candidates}
        return alive <= standing or now - self.acked_all_at >= DECIDE_WITHOUT_ALL_CANDIDATES
