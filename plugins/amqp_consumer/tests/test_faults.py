"""The reliability suite (``pytest -m reliability``): faults injected into real workers
and brokers, every row checked against a ledger kept outside the worker.

Each test prints its row of docs/reliability.md: published, completed, lost,
duplicated starts and completions, and the recovery times it measured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from bootkit_amqp_consumer import App, WorkerLostError
from e2e_support import (
    VHOST,
    WAIT,
    Broker,
    StartWorker,
    events,
    launch,
    stop,
    wait_for_events,
    wait_gone,
    wait_until,
)
from e2e_tasks import EXIT_PROCESS, WORK, WORK_LATE, Entry, read_ledger
from faults import check, completed, publish
from tests.support import Service

pytestmark = pytest.mark.reliability

LONG = 4.0  # seconds the long task of K2 runs


def rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None, "rabbitmqctl is needed to inject RabbitMQ faults"
    subprocess.run([ctl, *args], check=True, capture_output=True, timeout=120)


def starts(ledger: Path) -> int:
    return sum(1 for e in read_ledger(ledger) if e.event == "start")


def progressed(ledger: Path, count: int) -> bool:
    return starts(ledger) >= count


def restarted(worker: Service, times: int) -> bool:
    return len(events(worker, "child_restarted")) >= times


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["threads", "prefork-children"])
def test_p1_worker_killed_mid_run_with_late_acks_loses_nothing(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path, pool: str
) -> None:
    first = start_worker("--prefetch-multiplier", "1", pool=pool)
    tags = publish(broker, queue, ledger, 10, 1.0)
    wait_until(lambda: starts(ledger) >= 2, "two tasks running")
    running = {e.pid for e in read_ledger(ledger) if e.event == "start"}
    first.proc.kill()
    first.wait(WAIT)
    killed = time.monotonic()
    second = start_worker("--prefetch-multiplier", "1", pool=pool)
    try:
        wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    except BaseException:
        print("\n".join(["killed worker:", *first.lines[-40:], "second:", *second.lines[-80:]]))
        print(read_ledger(ledger))
        raise
    report = check(ledger, tags)
    print(
        "\n"
        + report.line(f"P1 kill -9 worker, late ack, {pool}", drain_s=time.monotonic() - killed)
    )
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert report.duplicate_starts <= 2  # only the two that were running
    for pid in running - {first.proc.pid}:  # a child of the killed parent: it ends
        wait_gone(pid)


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_p4_worker_killed_on_redis_its_tasks_are_back_within_the_visibility_timeout(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path
) -> None:
    timeout = 10.0
    options = ("--prefetch-multiplier", "1", "--visibility-timeout", str(timeout))
    first = start_worker(*options)
    tags = publish(broker, queue, ledger, 10, 1.0)
    wait_until(lambda: starts(ledger) >= 2, "two tasks running")
    first.proc.kill()
    first.wait(WAIT)
    killed, killed_at = time.monotonic(), time.time()
    entries = read_ledger(ledger)  # what ran and did not end: unacked when it was killed
    held = {e.tag for e in entries if e.event == "start"} - {
        e.tag for e in entries if e.event == "done"
    }
    start_worker(*options)
    bound = timeout + 1.0 + 1.0  # the timeout, a sweep (a tenth of it) and a second
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=bound + 30)
    report = check(ledger, tags)
    again = [e.at for e in read_ledger(ledger) if e.event == "start" and e.tag in held]
    redelivered = max(again) - killed_at  # the later of each held task's two starts
    print(
        "\n"
        + report.line(
            "P4 kill -9 worker, Redis, visibility timeout 10 s",
            redeliver_s=redelivered,
            drain_s=time.monotonic() - killed,
        )
    )
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert report.duplicate_starts == len(held)  # each held task ran again, once
    assert redelivered <= bound


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["threads", "prefork-children"])
def test_b3_connections_closed_three_times_the_worker_reconnects_and_loses_nothing(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path, client: App, pool: str
) -> None:
    worker = start_worker("--prefetch-multiplier", "1", pool=pool)
    tags = publish(broker, queue, ledger, 30, 0.3)
    for n in range(1, 4):
        wait_until(partial(progressed, ledger, n * 4), f"progress before cut {n}")
        rabbitmqctl("close_all_connections", "--vhost", VHOST, "reliability test")
        wait_until(partial(restarted, worker, n), f"reconnect {n}")
    # Timed by the worker's own log, from noticing the close to consuming again: the
    # rabbitmqctl CLI's own start-up (0.6 s idle, more on a loaded machine) is no part of it.
    reconnects = [
        seconds_between(lost, back)
        for lost, back in zip(
            events(worker, "child_restarting"), events(worker, "child_restarted"), strict=True
        )
    ]
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    report = check(ledger, tags)
    # The worker blueprint's timer (it holds ETA tasks) still fires after the reconnects.
    later = client.send_task(WORK_LATE, [str(ledger), "eta-after", 0.0], countdown=0.5)
    assert later.get(timeout=WAIT) == "eta-after"
    row = f"B3 close_all_connections x3, {pool}"
    print("\n" + report.line(row, reconnect_max_s=max(reconnects)))
    assert (report.lost, report.unexpected) == (0, 0)
    assert report.duplicate_completions == 0
    assert max(reconnects) < 2.0, reconnects


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["threads", "prefork-children"])
def test_b1_rabbitmq_down_ten_seconds_the_worker_recovers_and_loses_nothing(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path, pool: str
) -> None:
    worker = start_worker("--prefetch-multiplier", "1", pool=pool)
    tags = publish(broker, queue, ledger, 20, 0.3)
    wait_until(partial(progressed, ledger, 4), "progress before the outage")
    rabbitmqctl("stop_app")
    try:
        wait_until(partial(restarted_or_retrying, worker), "the worker noticing", timeout=15)
        time.sleep(10)  # the outage itself, not a synchronisation
    finally:
        rabbitmqctl("start_app")
    back = time.monotonic()
    wait_until(partial(restarted, worker, 1), "the worker consuming again", timeout=15)
    recovered = time.monotonic() - back
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    report = check(ledger, tags)
    print("\n" + report.line(f"B1 RabbitMQ stop_app 10 s, {pool}", recovery_s=recovered))
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert recovered < 5.0


def seconds_between(earlier: dict[str, Any], later: dict[str, Any]) -> float:
    """Seconds from one log event to another, by their timestamps."""
    stamp = datetime.fromisoformat
    return (stamp(later["timestamp"]) - stamp(earlier["timestamp"])).total_seconds()


def restarted_or_retrying(worker: Service) -> bool:
    return bool(events(worker, "child_restarting"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own (append-only file on), so restarting it
    disturbs nobody else and keeps what was written."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is needed for the Redis restart row"
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(redis.RedisError):
                redis.Redis(port=self.port, socket_timeout=2).shutdown()
            self.proc.wait(WAIT)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.proc.kill()
        server.proc.wait(WAIT)


def test_b5_redis_restarted_the_worker_recovers_and_loses_nothing(
    private_redis: PrivateRedis, tmp_path: Path, ledger: Path
) -> None:
    broker = Broker("redis", private_redis.url)
    queue = "faults-redis"
    with launch(tmp_path, broker, queue, "--prefetch-multiplier", "1") as worker:
        tags = publish(broker, queue, ledger, 20, 0.3)
        wait_until(partial(progressed, ledger, 4), "progress before the restart")
        private_redis.stop()
        wait_until(partial(restarted_or_retrying, worker), "the worker noticing", timeout=15)
        private_redis.start()
        back = time.monotonic()
        wait_until(partial(restarted, worker, 1), "the worker consuming again", timeout=15)
        recovered = time.monotonic() - back
        wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
        report = check(ledger, tags)
        print("\n" + report.line("B5 Redis restart", recovery_s=recovered))
        assert stop(worker) == 0
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert recovered < 5.0


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_p5_p6_warm_then_cold_shutdown_lose_nothing(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path
) -> None:
    warm = start_worker("--prefetch-multiplier", "1")  # declares the queue
    tags = publish(broker, queue, ledger, 12, 1.0)
    wait_until(partial(progressed, ledger, 2), "two tasks running")
    running = starts(ledger)
    warm.signal(signal.SIGTERM)
    assert warm.wait(WAIT) == 0
    assert completed(ledger, tags) >= running  # what ran, finished

    cold = start_worker("--prefetch-multiplier", "1", pool="prefork")
    wait_until(partial(progressed, ledger, running + 2), "two more running")
    cold.signal(signal.SIGTERM)
    cold.wait_for_event("consumer_draining", timeout=WAIT)
    cold.signal(signal.SIGTERM)
    assert cold.wait(WAIT) == 3

    start_worker("--prefetch-multiplier", "1")
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    report = check(ledger, tags)
    print("\n" + report.line("P5/P6 warm, then cold shutdown"))
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert report.duplicate_starts <= 2  # the two the cold shutdown cut short


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["prefork", "prefork-children"])
def test_p3_killed_pool_child_and_a_poison_task_lose_nothing_and_do_not_loop(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path, client: App, pool: str
) -> None:
    worker = start_worker("--prefetch-multiplier", "1", "--max-redeliveries", "2", pool=pool)
    tags = publish(broker, queue, ledger, 10, 0.5)
    poison = client.send_task(EXIT_PROCESS, [str(ledger), "poison"])
    (victim,) = wait_until(partial(first_start, ledger), "a task running in a child")
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    with pytest.raises(WorkerLostError):
        poison.get(timeout=WAIT)
    report = check(ledger, tags)
    deliveries = sum(1 for e in read_ledger(ledger) if e.tag == "poison")
    print(
        "\n"
        + report.line(
            "P3 pool child SIGKILL + os._exit poison",
            drain_s=time.monotonic() - killed,
            poison_runs=deliveries,
        )
    )
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert report.duplicate_starts == 1  # the killed one, run again
    assert deliveries == 3  # the first run and two redeliveries, then rejected
    # The log line is written before the result; the reader of the log may lag behind.
    wait_for_events(worker, "task_lost", 3, task_id=poison.id)
    # With children consuming for themselves the last redelivery goes back to the queue
    # with its child's connection, and the child that takes it rejects it unrun.
    wait_until(lambda: broker.depth(queue) == 0, "the poison task rejected, the queue empty")
    secrets = [line for line in worker.lines if ":guest@" in line]
    assert secrets == []  # S4: the broker password never reaches the log


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["solo", "threads", "prefork", "prefork-children"])
def test_k2_no_task_waits_behind_a_long_one_while_a_slot_is_free(
    start_worker: StartWorker, client: App, ledger: Path, pool: str
) -> None:
    # Two slots: two solo workers, or one worker with two; default prefetch and acks.
    workers = [start_worker(pool=pool) for _ in range(2 if pool == "solo" else 1)]
    long = client.send_task(WORK, [str(ledger), "long", LONG])
    shorts = [client.send_task(WORK, [str(ledger), f"s{i}"]) for i in range(10)]
    sent = time.monotonic()
    for result in shorts:
        result.get(timeout=WAIT)
    drained = time.monotonic() - sent
    ledger_now = read_ledger(ledger)
    assert not any(e.event == "done" and e.tag == "long" for e in ledger_now)
    first = min(e.at for e in ledger_now)
    waits = [e.at - first for e in ledger_now if e.event == "start" and e.tag != "long"]
    print(f"\n[K2 {pool}: 1 long + 10 short] max_wait_s={max(waits):.3f} drained_s={drained:.3f}")
    # Without fairness some of them sit behind the long task and end after it.
    assert max(waits) < LONG / 2
    if pool in ("solo", "prefork-children"):  # the busy one gave back what it reserved
        assert any(events(worker, "tasks_handed_back") for worker in workers)
    assert long.get(timeout=LONG + WAIT) == "long"


def first_start(ledger: Path) -> list[Entry]:
    return [e for e in read_ledger(ledger) if e.event == "start" and e.tag != "poison"][:1]


def rabbitmq_pid() -> int:
    found = subprocess.run(
        ["pgrep", "-u", "rabbitmq", "-f", "beam.smp"], capture_output=True, text=True, timeout=10
    )
    pids = found.stdout.split()
    assert len(pids) == 1, f"expected one RabbitMQ VM, found {pids}"
    return int(pids[0])


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_b6_frozen_broker_is_noticed_within_the_heartbeat_bound_and_survived(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path
) -> None:
    heartbeat = 2.0
    worker = start_worker("--prefetch-multiplier", "1", "--broker-heartbeat", str(heartbeat))
    tags = publish(broker, queue, ledger, 20, 0.3)
    wait_until(partial(progressed, ledger, 4), "progress before the freeze")
    pid = rabbitmq_pid()
    os.kill(pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_until(partial(restarted_or_retrying, worker), "the worker noticing", timeout=15)
        detected = time.monotonic() - frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(partial(restarted, worker, 1), "the worker consuming again", timeout=30)
    recovered = time.monotonic() - resumed
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    report = check(ledger, tags)
    print("\n" + report.line("B6 broker SIGSTOP", detect_s=detected, recovery_s=recovered))
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert detected <= 2.5 * heartbeat + 1.0  # two missed beats, checked once a second
