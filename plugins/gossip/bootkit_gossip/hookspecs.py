"""Hooks bootkit-gossip adds; any plugin may implement them.

They are called from the worker's consumer loop or timer thread: return quickly and
never raise (an exception is logged and the others still run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bootkit.hookspecs import hookspec

if TYPE_CHECKING:
    from bootkit_gossip.peers import Peer


@hookspec
def bootkit_gossip_peer_joined(peer: Peer) -> None:
    """A worker was heard from for the first time, or again after it was lost."""


@hookspec
def bootkit_gossip_peer_left(peer: Peer) -> None:
    """A worker said goodbye (worker-offline)."""


@hookspec
def bootkit_gossip_peer_lost(peer: Peer) -> None:
    """A worker missed its heartbeats: nothing heard for twice its interval."""


@hookspec
def bootkit_gossip_elected(id: str, topic: str, action: object, leader: str, won: bool) -> None:
    """An election this worker stood in is decided; `won` tells whether it is the leader."""
