"""-B on real workers over RabbitMQ: about one run a second from two beats, and a
restart mid-period that neither skips nor repeats the next run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from e2e_support import StartWorker, events, stop, wait_until
from e2e_tasks import WORK, read_ledger


def runs(ledger: Path, tag: str) -> list[float]:
    return [e.at for e in read_ledger(ledger) if e.event == "start" and e.tag == tag]


def entry(name: str, every: str, ledger: Path) -> str:
    return f"{name} every {every} {WORK} {json.dumps([str(ledger), name])}"


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_two_beats_send_each_run_once(
    start_worker: StartWorker, ledger: Path, tmp_path: Path
) -> None:
    schedule = ("--beat-schedule", entry("tick", "1s", ledger))
    first = start_worker("-B", *schedule, "-n", "beat-a@host")
    second = start_worker("-B", *schedule, "-n", "beat-b@host")
    wait_until(lambda: len(runs(ledger, "tick")) >= 6, "six ticks", timeout=15)
    times = runs(ledger, "tick")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"\ntwo -B workers, a 1 s interval: gaps {[round(g, 2) for g in gaps]}")
    assert all(0.7 <= gap <= 1.3 for gap in gaps), gaps
    leaders = [w for w in (first, second) if events(w, "beat_leading")]
    assert len(leaders) == 1


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_a_restarted_beat_resumes_the_schedule(
    start_worker: StartWorker, ledger: Path, tmp_path: Path
) -> None:
    options: tuple[str, ...] = ("-B", "--beat-schedule", entry("slow", "3s", ledger))
    options = (*options, "--beat-state", str(tmp_path / "beat.json"))
    first = start_worker(*options)
    wait_until(lambda: runs(ledger, "slow"), "the first run", timeout=10)
    assert stop(first) == 0
    start_worker(*options)
    wait_until(lambda: len(runs(ledger, "slow")) >= 2, "the second run", timeout=10)
    one, two = runs(ledger, "slow")[:2]
    print(f"\nrestarted mid-period: the next run came {two - one:.2f}s after the last")
    assert 2.5 <= two - one <= 3.6  # not repeated at the restart, not pushed back by it
