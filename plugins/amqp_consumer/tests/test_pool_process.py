"""The prefork pool, with real forked children: outcomes, time limits, deaths and
replacement, signals and file descriptors (resizing and stopping: test_pool_resize)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pool_support import (
    RESPAWN,
    TIMEOUT,
    Gate,
    Outcomes,
    assert_reaped,
    flush,
    make_job,
    run_task,
    wait_exited,
)

from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pool_process import ProcessPool
from bootkit_amqp_consumer.pools import Pool


def test_prefork_pool_satisfies_the_pool_protocol() -> None:
    pool: Pool = ProcessPool(run_task, 2)
    assert (pool.kind, pool.size) == ("prefork", 2)


def test_results_come_back_for_many_jobs(start_pool: Callable[[int], ProcessPool]) -> None:
    pool = start_pool(4)
    outcomes = Outcomes()
    jobs = [make_job("add", i, i) for i in range(300)]
    for job in jobs:
        pool.submit(job, outcomes)
    results = [o.result for o in outcomes.wait_all(jobs)]
    assert results == [2 * i for i in range(300)]
    assert outcomes.threads == {"bootkit-prefork-supervisor"}
    assert pool.active() == []


def test_task_failure_comes_back_with_type_module_message_and_traceback(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    job = make_job("fail", "boom")
    pool.submit(job, outcomes)
    outcome = outcomes.get(job)
    assert (outcome.state, outcome.exc_type, outcome.exc_module) == (
        "FAILURE",
        "ValueError",
        "builtins",
    )
    assert outcome.exc_message == "boom"
    assert "in fail" in (outcome.traceback or "")
    assert not outcome.lost


def test_n_jobs_run_at_once_on_n_children(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(3)
    outcomes = Outcomes()
    jobs = [gate.job(label) for label in "abc"]
    for job in jobs:
        pool.submit(job, outcomes)
    # All three are inside the task at once: none can finish before the release.
    started = [gate.started() for _ in jobs]
    assert {label for _, label in started} == {"a", "b", "c"}
    assert {pid for pid, _ in started} == set(pool.pids())
    assert sorted(pool.active()) == sorted(job.id for job in jobs)
    gate.release(3)
    assert {o.result for o in outcomes.wait_all(jobs)} == set(pool.pids())


def test_a_job_never_waits_behind_a_busy_child(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    slow = gate.job("slow")
    pool.submit(slow, outcomes)
    busy_pid, _ = gate.started()
    quick = [make_job("whoami") for _ in range(20)]
    for job in quick:
        pool.submit(job, outcomes)
    # They all finish while the slow job still holds the other child.
    ran_on = {o.result for o in outcomes.wait_all(quick)}
    assert busy_pid not in ran_on
    assert len(ran_on) == 1
    assert pool.active() == [slow.id]
    gate.release()
    assert outcomes.get(slow).result == busy_pid


def test_soft_time_limit_raises_inside_the_task(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    pid = flush(pool, outcomes)
    job = make_job("nap_and_clean_up", 60, soft_time_limit=0.2)
    submitted = time.monotonic()
    pool.submit(job, outcomes)
    outcome = outcomes.get(job)
    assert (outcome.state, outcome.result) == ("SUCCESS", "cleaned up")
    assert 0.2 <= outcomes.at[job.id] - submitted < 0.2 + RESPAWN
    assert flush(pool, outcomes) == pid  # the child lives on


def test_uncaught_soft_time_limit_is_a_failure_and_the_child_lives_on(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    pid = flush(pool, outcomes)
    job = make_job("nap", 60, soft_time_limit=0.1, time_limit=30)
    pool.submit(job, outcomes)
    outcome = outcomes.get(job)
    assert (outcome.state, outcome.exc_type, outcome.exc_module) == (
        "FAILURE",
        "SoftTimeLimitExceededError",
        "bootkit_amqp_consumer.errors",
    )
    assert not outcome.lost
    assert flush(pool, outcomes) == pid


def test_hard_time_limit_kills_and_replaces_the_child_within_a_second(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    pids_before = set(pool.pids())
    job = make_job("nap", 60, soft_time_limit=30, time_limit=0.3)
    submitted = time.monotonic()
    pool.submit(job, outcomes)
    outcome = outcomes.get(job)
    assert (outcome.state, outcome.exc_type, outcome.exc_module, outcome.lost) == (
        "FAILURE",
        "TimeLimitExceededError",
        "bootkit_amqp_consumer.errors",
        False,
    )
    assert "SIGKILL" in (outcome.exc_message or "")
    assert outcomes.at[job.id] - submitted < 0.3 + RESPAWN
    # The replacement was forked before the outcome was reported.
    pids_after = set(pool.pids())
    assert len(pids_after) == 2
    (killed,) = pids_before - pids_after
    assert_reaped(killed)
    assert all(o.state == "SUCCESS" for o in run_everywhere(pool, outcomes))


def run_everywhere(pool: ProcessPool, outcomes: Outcomes) -> list[Outcome]:
    """Run a few jobs per slot, to show every child takes work."""
    jobs = [make_job("add", 1, 1) for _ in range(pool.size * 4)]
    for job in jobs:
        pool.submit(job, outcomes)
    return outcomes.wait_all(jobs)


def assert_lost_and_replaced(
    pool: ProcessPool, outcomes: Outcomes, job: Job, pid: int, died: float, how: str
) -> None:
    """`job` was reported lost within a second of its child `pid` dying, which was replaced."""
    outcome = outcomes.get(job)
    assert outcomes.at[job.id] - died < RESPAWN
    assert (outcome.state, outcome.exc_type, outcome.exc_module, outcome.lost) == (
        "FAILURE",
        "WorkerLostError",
        "bootkit_amqp_consumer.errors",
        True,
    )
    assert how in (outcome.exc_message or "")
    # The replacement was forked before the outcome was reported.
    assert len(pool.pids()) == pool.size
    assert pid not in pool.pids()
    assert_reaped(pid)
    assert all(o.state == "SUCCESS" for o in run_everywhere(pool, outcomes))


def test_kill_9_of_a_busy_child_reports_its_job_lost_and_replaces_it(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    job = gate.job("victim")
    pool.submit(job, outcomes)
    pid, _ = gate.started()
    died = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert_lost_and_replaced(pool, outcomes, job, pid, died, "signal 9 (SIGKILL)")


def test_a_child_reaped_while_the_loop_watches_keeps_its_pipe_until_the_next_watch(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    # The loop may be waiting on the pipes `watch` gave it: closing one under it would
    # fail its select (or watch an unrelated fd that reused the number).
    pool = start_pool(1)
    outcomes = Outcomes()
    job = gate.job("victim")
    pool.submit(job, outcomes)
    pid, _ = gate.started()
    (watched,) = pool.watch()
    os.kill(pid, signal.SIGKILL)
    assert outcomes.get(job).lost  # reported by the supervisor once it reaped the child
    assert pid not in pool.pids()
    os.fstat(watched)  # still open: raises OSError once closed
    assert watched not in pool.watch()  # the next watch lets it go
    pool.unwatch()


def test_a_task_calling_os_exit_is_reported_lost_and_its_child_replaced(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    pid = flush(pool, outcomes)
    job = make_job("exit_now", 1)
    died = time.monotonic()  # at most: the task exits right after it is submitted
    pool.submit(job, outcomes)
    assert_lost_and_replaced(pool, outcomes, job, pid, died, "exit code 1")


def test_a_child_dying_is_noticed_even_if_its_own_child_holds_the_pipes(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    job = gate.job("parent", name="fork_grandchild_then_block")
    pool.submit(job, outcomes)
    pid, _ = gate.started()
    died = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    outcome = outcomes.get(job)
    assert outcome.lost
    assert outcomes.at[job.id] - died < RESPAWN
    gate.release()  # lets the grandchild exit (it is reparented, not ours to reap)


def test_an_idle_child_that_dies_is_replaced_without_an_outcome(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    pid = flush(pool, outcomes)
    os.kill(pid, signal.SIGKILL)
    wait_exited(pid)
    assert flush(pool, outcomes) != pid
    assert len(outcomes.received) == 2
    assert pid not in pool.pids()
    assert_reaped(pid)


def test_terminate_kills_the_running_job_and_reports_it_lost(
    start_pool: Callable[[int], ProcessPool], gate: Gate
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    job = gate.job("doomed")
    pool.submit(job, outcomes)
    pid, _ = gate.started()
    assert pool.terminate("no-such-job") is False
    assert pool.terminate(job.id) is True
    outcome = outcomes.get(job)
    assert (outcome.state, outcome.exc_type, outcome.lost) == ("FAILURE", "Terminated", True)
    assert "SIGTERM" in (outcome.exc_message or "")
    assert pool.terminate(job.id) is False
    assert flush(pool, outcomes) != pid
    assert_reaped(pid)


def test_children_leave_signals_to_the_parent(start_pool: Callable[[int], ProcessPool]) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous = signal.set_wakeup_fd(wake_w)
    old_usr2 = signal.signal(signal.SIGUSR2, lambda signum, frame: None)
    try:
        pool = start_pool(1)
        outcomes = Outcomes()
        job = make_job("signal_state")
        pool.submit(job, outcomes)
        state = outcomes.get(job).result
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGINT)  # a Ctrl-C reaches the whole process group
        assert flush(pool, outcomes) == pid
    finally:
        signal.set_wakeup_fd(previous)
        signal.signal(signal.SIGUSR2, old_usr2)
        os.close(wake_r)
        os.close(wake_w)
    assert state == {
        "sigint": signal.SIG_IGN,
        "sigterm": signal.SIG_DFL,
        "sigusr2": signal.SIG_DFL,
        "wakeup_fd": -1,
    }


def test_an_unpicklable_result_is_a_failure_and_the_child_lives_on(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(1)
    outcomes = Outcomes()
    pid = flush(pool, outcomes)
    job = make_job("unpicklable")
    pool.submit(job, outcomes)
    outcome = outcomes.get(job)
    assert outcome.state == "FAILURE"
    assert outcome.exc_type in {"PicklingError", "AttributeError"}
    assert flush(pool, outcomes) == pid
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pool.submit(make_job("add", lambda: None, 1), outcomes)


def test_replacing_children_leaks_no_file_descriptors(
    start_pool: Callable[[int], ProcessPool],
) -> None:
    pool = start_pool(2)
    outcomes = Outcomes()
    flush(pool, outcomes)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        pid = flush(pool, outcomes)
        os.kill(pid, signal.SIGKILL)
        wait_exited(pid)
    flush(pool, outcomes)
    assert len(pool.pids()) == 2
    assert len(os.listdir("/proc/self/fd")) == before


PARENT_SCRIPT = """
import os, signal, sys, threading
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pool_process import ProcessPool

def run(job):
    os.read(job.args[0], 1)
    return Outcome(job.id, "SUCCESS", result=os.getpid())

pool = ProcessPool(run, 2)
pool.start()
a_done = threading.Event()
a_pid = []
pool.submit(Job("a", "block", (int(sys.argv[1]),), {}), lambda o: (a_pid.append(o.result), a_done.set()))
pool.submit(Job("b", "block", (int(sys.argv[2]),), {}), lambda o: None)
os.write(int(sys.argv[3]), b"x")  # only now, so "a" cannot free its child for "b"
assert a_done.wait(10)
(b_pid,) = set(pool.pids()) - set(a_pid)
print(a_pid[0], b_pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_idle_children_exit_at_once_when_the_parent_is_killed(tmp_path: Path) -> None:
    # Job "a" runs on the older child and ends at once; "b" keeps the younger one busy.
    # The older child must not wait for its busy sibling to see its pipe close.
    release_a_r, release_a_w = os.pipe()
    release_b_r, release_b_w = os.pipe()
    try:
        # Files, not pipes: the children inherit the parent's stdout and outlive it.
        with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", PARENT_SCRIPT]
                + [str(fd) for fd in (release_a_r, release_b_r, release_a_w)],
                pass_fds=(release_a_r, release_b_r, release_a_w),
                stdout=out,
                stderr=err,
            )
            assert proc.wait(TIMEOUT) == -signal.SIGKILL, (tmp_path / "err").read_text()
        idle, busy = (int(pid) for pid in (tmp_path / "out").read_text().split())
        wait_exited(idle)
        os.kill(busy, 0)  # still in its task
        os.write(release_b_w, b"x")
        wait_exited(busy)  # its outcome has nowhere to go: it exits too
    finally:
        for fd in (release_a_r, release_a_w, release_b_r, release_b_w):
            os.close(fd)
