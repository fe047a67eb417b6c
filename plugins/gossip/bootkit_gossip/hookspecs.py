"""Hooks bootkit-gossip adds (through ``bootkit_add_hookspecs``); any plugin may
implement them with ``@bootkit.hookimpl``.

They are called from the worker's consumer loop or timer thread: return quickly. An
exception is logged (``gossip_hook_failed``) and gossip carries on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from bootkit_gossip.peers import Peer

# bootkit's project name: the marker `bootkit.hookimpl` implementations are found by.
hookspec = pluggy.HookspecMarker("bootkit")


@hookspec
def bootkit_gossip_peer_joined(peer: Peer) -> None:
    """A worker was heard from for the first time, again after it left or was lost, or
    with a new pid (it restarted under the same name)."""


@hookspec
def bootkit_gossip_peer_left(peer: Peer) -> None:
    """A worker said goodbye (``worker-offline``, sent on its warm stop)."""


@hookspec
def bootkit_gossip_peer_lost(peer: Peer) -> None:
    """A worker went silent: nothing heard for twice its heartbeat interval."""


@hookspec
def bootkit_gossip_elected(id: str, topic: str, action: Any, leader: str, won: bool) -> None:
    """An election this worker stood in is decided: `leader` is the winner's
    ``hostname.pid``; `won` tells whether that is this worker."""
