"""The peer table and the election rule, with made-up events and times."""

from __future__ import annotations

from bootkit_gossip import Election, PeerTable


def beat(host: str, kind: str = "worker-heartbeat", **fields: object) -> dict[str, object]:
    return {"type": kind, "hostname": host, "pid": 7, "clock": 3, "freq": 2.0, **fields}


def test_a_peer_joins_once_leaves_on_offline_and_rejoins() -> None:
    table = PeerTable("me@host")
    joined = table.observe(beat("a@host", "worker-online"), now=0.0)
    assert joined is not None
    assert joined[0] == "joined"
    assert joined[1].hostname == "a@host"
    assert table.observe(beat("a@host"), now=1.0) is None
    assert table.observe(beat("me@host"), now=1.0) is None  # ourselves: not a peer
    left = table.observe(beat("a@host", "worker-offline"), now=2.0)
    assert left is not None
    assert left[0] == "left"
    assert table.observe(beat("a@host", "worker-offline"), now=2.1) is None
    again = table.observe(beat("a@host"), now=3.0)
    assert again is not None
    assert again[0] == "joined"


def test_a_peer_is_lost_after_twice_its_interval_and_only_once() -> None:
    table = PeerTable("me@host")
    table.observe(beat("a@host", freq=2.0), now=10.0)
    table.observe(beat("b@host", freq=0.5), now=10.0)
    assert table.expire(now=10.9) == []
    assert [p.hostname for p in table.expire(now=11.0)] == ["b@host"]  # 0.5 * 2
    assert table.expire(now=13.9) == []
    assert [p.hostname for p in table.expire(now=14.0)] == ["a@host"]  # 2.0 * 2
    assert table.expire(now=20.0) == []
    assert table.alive() == []


def test_an_event_without_freq_counts_celerys_default() -> None:
    table = PeerTable("me@host")
    table.observe({"type": "worker-online", "hostname": "c@host"}, now=0.0)
    assert table.expire(now=3.9) == []
    assert len(table.expire(now=4.0)) == 1


def test_election_waits_for_every_ack_then_for_every_candidate() -> None:
    election = Election("e1", stood=True)
    election.candidates |= {(5, "me@host.1"), (4, "b@host.2")}
    alive = ["me@host", "a@host", "b@host"]
    election.acks |= {"me@host", "b@host"}
    assert not election.decided(alive, now=0.0)  # a@host has not acked
    election.acks.add("a@host")
    assert not election.decided(alive, now=0.1)  # a@host may still stand
    assert not election.decided(alive, now=1.0)
    assert election.decided(alive, now=1.1)  # one second after the acks were complete
    assert election.leader() == "b@host.2"  # the lowest clock


def test_election_decides_at_once_when_everyone_stood_and_ties_break_by_name() -> None:
    election = Election("e2", stood=True)
    election.candidates |= {(4, "b@host.2"), (4, "a@host.9")}
    election.acks |= {"a@host", "b@host"}
    assert election.decided(["a@host", "b@host"], now=0.0)
    assert election.leader() == "a@host.9"


def test_a_worker_that_did_not_stand_never_decides() -> None:
    election = Election("e3")
    election.candidates.add((1, "a@host.1"))
    election.acks.add("a@host")
    assert not election.decided(["a@host"], now=100.0)
