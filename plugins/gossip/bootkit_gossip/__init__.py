"""bootkit-gossip: who else is in the cluster (gossip), and what they know (mingle)."""

from bootkit_gossip.election import Election
from bootkit_gossip.peers import Change, Peer, PeerTable

__all__ = ["Change", "Election", "Peer", "PeerTable"]
