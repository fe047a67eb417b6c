"""The reliability suite (``pytest -m reliability``): faults injected into real workers
and brokers, every row checked against a ledger kept outside the worker.

Each test prints its row of docs/reliability.md: published, completed, lost,
duplicated starts and completions, and the recovery times it measured.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from e2e_support import VHOST, WAIT, Broker, StartWorker, events, wait_until
from e2e_tasks import read_ledger
from faults import check, completed, publish
from tests.support import Service

pytestmark = pytest.mark.reliability


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
def test_p1_worker_killed_mid_run_with_late_acks_loses_nothing(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path
) -> None:
    first = start_worker("--prefetch-multiplier", "1")
    tags = publish(broker, queue, ledger, 10, 1.0)
    wait_until(lambda: starts(ledger) >= 2, "two tasks running")
    first.proc.kill()
    first.wait(WAIT)
    killed = time.monotonic()
    start_worker("--prefetch-multiplier", "1")
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    report = check(ledger, tags)
    print("\n" + report.line("P1 kill -9 worker, late ack", drain_s=time.monotonic() - killed))
    assert (report.lost, report.duplicate_completions, report.unexpected) == (0, 0, 0)
    assert report.duplicate_starts <= 2  # only the two that were running


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_b3_connections_closed_three_times_the_worker_reconnects_and_loses_nothing(
    start_worker: StartWorker, broker: Broker, queue: str, ledger: Path
) -> None:
    worker = start_worker("--prefetch-multiplier", "1")
    tags = publish(broker, queue, ledger, 30, 0.3)
    reconnects: list[float] = []
    for n in range(1, 4):
        wait_until(partial(progressed, ledger, n * 4), f"progress before cut {n}")
        cut = time.monotonic()
        rabbitmqctl("close_all_connections", "--vhost", VHOST, "reliability test")
        wait_until(partial(restarted, worker, n), f"reconnect {n}")
        reconnects.append(time.monotonic() - cut)
    wait_until(lambda: completed(ledger, tags) == len(tags), "every task done", timeout=60)
    report = check(ledger, tags)
    print("\n" + report.line("B3 close_all_connections x3", reconnect_max_s=max(reconnects)))
    assert (report.lost, report.unexpected) == (0, 0)
    assert report.duplicate_completions == 0
    assert max(reconnects) < 2.0, reconnects
