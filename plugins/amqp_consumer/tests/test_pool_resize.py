"""The prefork pool resized and stopped, with real forked children: grow, shrink
(idle children now, busy ones after their job, never the last), warm and cold stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from pool_support import (
    RESPAWN,
    TIMEOUT,
    Gate,
    Outcomes,
    assert_reaped,
    flush,
    make_job,
    wait_exited,
)

from bootkit_amqp_consumer.errors import WorkerError
from bootkit_amqp_consumer.pool_process import ProcessPool


def test_grow_forks_children_now(start_pool: Callable[[int], ProcessPool], gate: Gate) -> None:
    pool = start_pool(1)
    pool.grow(2)
    assert pool.size == 3
    assert len(pool.pids()) == 3
    outcomes = Outcomes()
    jobs = [gate.job(label) for label in "abc"]
    for job in jobs:
        pool.submit(job, outcomes)
    assert {gate.started()[0] for _ in jobs} == set(pool.pids())
    gate.release(3)
    outcomes.wait_all(jobs)


def test_shrink_retires_idle_children_now_and_never_the_last(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(3)
    outcomes = Outcomes()
    pids = set(pool.pids())
    pool.shrink(5)
    assert pool.size == 1
    survivor = flush(pool, outcomes)
    for pid in pids - {survivor}:
        wait_exited(pid)
    assert flush(pool, outcomes) == survivor
    assert pool.pids() == [survivor]
    for pid in pids - {survivor}:
        assert_reaped(pid)


def test_shrink_retires_busy_children_after_their_job(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    jobs = [gate.job("a"), gate.job("b")]
    for job in jobs:
        pool.submit(job, outcomes)
    started = {gate.started()[0], gate.started()[0]}
    pool.shrink(1)
    assert pool.size == 1
    assert sorted(pool.active()) == sorted(job.id for job in jobs)
    gate.release()
    (first,) = outcomes.wait_count(1)
    wait_exited(first.result)  # retired as soon as its job ended
    assert len(pool.active()) == 1
    gate.release()
    outcomes.wait_all(jobs)
    (survivor,) = started - {first.result}
    assert flush(pool, outcomes) == survivor
    assert pool.pids() == [survivor]
    assert_reaped(first.result)


def test_stop_with_wait_runs_every_submitted_job_then_reaps(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    blocked = [gate.job("a"), gate.job("b")]
    queued = [make_job("add", i, 1) for i in range(6)]
    for job in blocked + queued:
        pool.submit(job, outcomes)
    gate.started(), gate.started()
    pids = pool.pids()
    stopper = threading.Thread(target=pool.stop, kwargs={"wait": True})
    stopper.start()
    assert stopper.is_alive()  # two jobs are still blocked
    gate.release(2)
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert all(o.state == "SUCCESS" for o in outcomes.wait_all(blocked + queued))
    assert pool.pids() == []
    for pid in pids:
        assert_reaped(pid)


def test_stop_without_wait_kills_at_once_and_reports_nothing(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    for job in [gate.job("a"), gate.job("b")] + [make_job("add", 1, 1) for _ in range(3)]:
        pool.submit(job, outcomes)
    gate.started(), gate.started()
    pids = pool.pids()
    began = time.monotonic()
    pool.stop(wait=False)
    assert time.monotonic() - began < RESPAWN
    assert outcomes.received == {}
    assert pool.pids() == []
    for pid in pids:
        assert_reaped(pid)
    with pytest.raises(WorkerError, match="stopped prefork pool"):
        pool.submit(make_job("add", 1, 1), outcomes)


def test_stop_without_wait_cuts_short_a_stop_that_waits(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    pool.submit(gate.job("stuck"), outcomes)
    gate.started()
    (pid,) = pool.pids()
    warm = threading.Thread(target=pool.stop, kwargs={"wait": True})
    warm.start()
    pool.stop(wait=False)  # the second Ctrl-C
    warm.join(TIMEOUT)
    assert not warm.is_alive()
    assert outcomes.received == {}
    assert_reaped(pid)
