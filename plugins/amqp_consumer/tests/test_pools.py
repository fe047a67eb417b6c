"""The solo and thread pools (the prefork pool is in test_pool_process)."""

from __future__ import annotations

import threading

import pytest
from pool_support import Gate, Outcomes, make_job, run_task

from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pools import Pool, SoloPool, ThreadPool


def test_solo_pool_runs_the_job_in_the_callers_thread() -> None:
    pool: Pool = SoloPool(run_task)
    outcomes = Outcomes()
    job = make_job("add", 2, 3)
    pool.submit(job, outcomes)
    assert outcomes.received[job.id].result == 5
    assert outcomes.threads == {threading.current_thread().name}
    assert pool.active() == []
    with pytest.raises(ValueError, match="exactly one slot"):
        pool.grow(1)


def test_thread_pool_runs_jobs_in_parallel_and_resizes(gate: Gate) -> None:
    pool: Pool = ThreadPool(run_task, 2)
    pool.start()
    outcomes = Outcomes()
    jobs = [gate.job("a"), gate.job("b")]
    for job in jobs:
        pool.submit(job, outcomes)
    assert {gate.started()[1], gate.started()[1]} == {"a", "b"}
    assert sorted(pool.active()) == sorted(job.id for job in jobs)
    gate.release(2)
    assert all(o.state == "SUCCESS" for o in outcomes.wait_all(jobs))
    pool.grow(2)
    pool.shrink(10)
    assert pool.size == 1
    pool.stop(wait=True)


def test_thread_pool_failure_outcome_carries_the_exception() -> None:
    pool = ThreadPool(run_task, 1)
    pool.start()
    outcomes = Outcomes()
    job = make_job("fail", "boom")
    pool.submit(job, outcomes)
    outcome = outcomes.get(job)
    pool.stop()
    assert (outcome.state, outcome.exc_type, outcome.exc_message) == (
        "FAILURE",
        "ValueError",
        "boom",
    )


def test_a_job_handed_out_while_an_outcome_is_reported_runs_next_in_that_thread() -> None:
    ran_in: dict[str, str] = {}
    second_started = threading.Event()

    def runner(job: Job) -> Outcome:
        ran_in[job.id] = threading.current_thread().name
        if job.id == second.id:
            second_started.set()
        return run_task(job)

    pool = ThreadPool(runner, 2)
    pool.start()
    outcomes = Outcomes()
    first, second, third = make_job("add", 1, 1), make_job("add", 2, 2), make_job("add", 3, 3)
    early: list[bool] = []

    def done(outcome: Outcome) -> None:
        if outcome.job_id == first.id:
            # As the consumer does in the loop's turn: the next tasks go out from here.
            pool.submit(second, outcomes)
            pool.submit(third, outcomes)  # the thread keeps one: this one is queued
            # The other thread is idle, yet the kept job waits for this one (a bounded
            # look for something that must not happen; it passes in 0.3 s).
            early.append(second_started.wait(0.3))
        outcomes(outcome)

    pool.submit(first, done)
    assert [o.result for o in outcomes.wait_all([first, second, third])] == [2, 4, 6]
    pool.stop()
    assert early == [False]
    assert ran_in[second.id] == ran_in[first.id]
