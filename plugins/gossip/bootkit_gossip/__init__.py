"""bootkit-gossip: who else is in the cluster (gossip), and what they know (mingle)."""

from bootkit_gossip.peers import Election, Peer, PeerTable

__all__ = ["Election", "Peer", "PeerTable"]
