"""The peer table: joins, leaves and losses from made-up events and receive times."""

from __future__ import annotations

from bootkit_gossip import Change, PeerTable


def beat(host: str, kind: str = "worker-heartbeat", **fields: object) -> dict[str, object]:
    return {"type": kind, "hostname": host, "pid": 7, "clock": 3, "freq": 2.0, **fields}


def observed(table: PeerTable, event: dict[str, object], now: float) -> Change:
    change = table.observe(event, now)
    assert change is not None, event
    return change


def test_a_peer_joins_on_its_first_event_with_what_it_says_of_itself() -> None:
    table = PeerTable("me@host")
    change = observed(table, beat("a@host", "worker-online", sw_ident="py-celery"), now=5.0)
    assert change.kind == "joined"
    assert change.silent is None
    peer = change.peer
    assert (peer.hostname, peer.pid, peer.freq, peer.clock) == ("a@host", 7, 2.0, 3)
    assert (peer.last_heard, peer.sw_ident, peer.alive) == (5.0, "py-celery", True)
    assert table.observe(beat("a@host", clock=9), now=6.0) is None
    assert table.peers["a@host"].clock == 9
    assert change.peer.clock == 3  # hooks get a copy, not the table's own


def test_our_own_events_and_other_event_types_are_not_peers() -> None:
    table = PeerTable("me@host")
    assert table.observe(beat("me@host", "worker-online"), now=0.0) is None
    assert table.observe(beat("a@host", "task-succeeded"), now=0.0) is None
    assert table.observe({"type": "worker-online"}, now=0.0) is None
    assert table.peers == {}


def test_a_peer_leaves_on_offline_once_and_rejoins_later() -> None:
    table = PeerTable("me@host")
    table.observe(beat("a@host", "worker-online"), now=0.0)
    left = observed(table, beat("a@host", "worker-offline"), now=1.5)
    assert (left.kind, left.silent, left.peer.alive) == ("left", 1.5, False)
    assert table.observe(beat("a@host", "worker-offline"), now=2.0) is None
    assert table.alive() == []
    again = observed(table, beat("a@host", "worker-online"), now=4.0)
    assert (again.kind, again.silent) == ("joined", 2.5)
    assert table.alive() == ["a@host"]


def test_an_offline_from_a_peer_never_seen_changes_nothing() -> None:
    table = PeerTable("me@host")
    assert table.observe(beat("a@host", "worker-offline"), now=0.0) is None


def test_a_new_pid_under_a_known_name_is_a_new_join() -> None:
    table = PeerTable("me@host")
    table.observe(beat("a@host", pid=7), now=0.0)
    assert table.observe(beat("a@host", pid=7), now=1.0) is None
    restarted = observed(table, beat("a@host", pid=8), now=1.5)
    assert (restarted.kind, restarted.peer.pid) == ("joined", 8)


def test_a_peer_is_lost_after_twice_its_interval_and_only_once() -> None:
    table = PeerTable("me@host")
    table.observe(beat("a@host", freq=2.0), now=10.0)
    table.observe(beat("b@host", freq=0.5), now=10.0)
    assert table.expire(now=10.9) == []
    (b,) = table.expire(now=11.0)  # 0.5 * 2
    assert (b.kind, b.peer.hostname, b.silent, b.peer.alive) == ("lost", "b@host", 1.0, False)
    assert table.expire(now=13.9) == []
    (a,) = table.expire(now=14.0)  # 2.0 * 2
    assert a.peer.hostname == "a@host"
    assert table.expire(now=20.0) == []
    assert table.alive() == []


def test_every_event_keeps_a_peer_alive() -> None:
    table = PeerTable("me@host")
    for second in range(10):
        table.observe(beat("a@host"), now=float(second))
        assert table.expire(now=second + 3.9) == []
    assert table.alive() == ["a@host"]


def test_a_lost_peer_heard_again_rejoins_with_how_long_it_was_silent() -> None:
    table = PeerTable("me@host")
    table.observe(beat("a@host"), now=0.0)
    table.expire(now=4.0)
    back = observed(table, beat("a@host"), now=30.0)
    assert (back.kind, back.silent) == ("joined", 30.0)


def test_an_event_without_freq_counts_celerys_default() -> None:
    table = PeerTable("me@host")
    table.observe({"type": "worker-online", "hostname": "c@host"}, now=0.0)
    assert table.expire(now=3.9) == []
    assert len(table.expire(now=4.0)) == 1
