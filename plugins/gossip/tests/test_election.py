"""The election rule: who decides when, and who wins, from made-up requests and acks."""

from __future__ import annotations

from bootkit_gossip import Election
from bootkit_gossip.election import ACK_DEADLINE, hostname_of

EVERYONE = ["me@host", "a@host", "b@host"]


def stood(*candidates: tuple[int, str], at: float = 0.0) -> Election:
    election = Election("e1", opened=at, stood_at=at)
    election.candidates |= set(candidates)
    return election


def test_a_candidate_waits_for_every_ack_then_one_second_for_other_candidates() -> None:
    election = stood((5, "me@host.1"), (4, "b@host.2"))
    election.acks |= {"me@host", "b@host"}
    assert not election.decided(EVERYONE, now=0.0)
    assert election.missing(EVERYONE) == ["a@host"]
    election.acks.add("a@host")
    assert not election.decided(EVERYONE, now=0.1)  # a@host may still stand
    assert not election.decided(EVERYONE, now=1.0)
    assert election.decided(EVERYONE, now=1.1)  # one second after the acks were complete
    assert election.leader() == "b@host.2"  # the lowest clock


def test_it_decides_at_once_when_every_alive_worker_stood() -> None:
    election = stood((4, "b@host.2"), (4, "a@host.9"), (6, "me@host.1"))
    election.acks |= set(EVERYONE)
    assert election.decided(EVERYONE, now=0.0)
    assert election.leader() == "a@host.9"  # equal clocks: the lower "host.pid"


def test_every_candidate_that_saw_the_same_requests_names_the_same_leader() -> None:
    requests = [(7, "a@host.1"), (3, "b@host.2"), (3, "c@host.3")]
    views = [stood(*requests), stood(*reversed(requests))]
    assert {view.leader() for view in views} == {"b@host.2"}


def test_a_worker_that_did_not_stand_never_decides() -> None:
    election = Election("e3", opened=0.0)
    election.candidates.add((1, "a@host.1"))
    election.acks.add("a@host")
    assert not election.decided(["a@host"], now=100.0)


def test_a_worker_that_never_acks_holds_the_election_only_until_the_deadline() -> None:
    election = stood((2, "me@host.1"), at=10.0)
    election.acks.add("me@host")  # a@host runs without gossip: it never acks
    assert not election.decided(["me@host", "a@host"], now=10.0 + ACK_DEADLINE - 0.1)
    assert election.decided(["me@host", "a@host"], now=10.0 + ACK_DEADLINE)
    assert election.leader() == "me@host.1"


def test_a_peer_lost_while_the_acks_come_in_is_not_waited_for() -> None:
    election = stood((2, "me@host.1"), (1, "a@host.4"))
    election.acks |= {"me@host", "a@host"}
    assert not election.decided(EVERYONE, now=0.5)  # b@host has not acked
    assert election.decided(["me@host", "a@host"], now=0.6)  # b@host was lost


def test_hostnames_with_dots_survive_the_pid_suffix() -> None:
    assert hostname_of("w1@db.example.com.4242") == "w1@db.example.com"
