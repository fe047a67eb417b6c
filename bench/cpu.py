"""CPU time per task from /proc: what a worker's processes, the broker and Redis spent
while a counted window of tasks drained, and how busy the whole machine was.

It tells a worker that is short of CPU from one that waits: at the same rate, a
worker whose processes and broker use less CPU a task leaves more of the machine
idle, and one that leaves it idle is held back by a hand-off, not by its code.
The kernel's scheduler statistics (``/proc/<pid>/task/<tid>/schedstat``) add what
the worker's threads spent runnable but waiting for a core, and the share of the
window its busiest thread was on a core or waiting for one: a thread near 100 % is
what the rate is bound by, however idle the machine looks.
Linux only; elsewhere (or for a broker on another machine) the figures are absent.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SERVERS = {"rabbitmq": "beam.smp", "redis": "redis-server"}  # column -> process name


def _stat(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone, or no /proc
        return None
    return text.rsplit(")", 1)[1].split()  # after "pid (comm)", which may hold spaces


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in PROC.glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, ()))
    return found


def named(name: str) -> list[int]:
    """The processes whose command name is `name`."""
    pids = []
    for entry in PROC.glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() == name:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """User and system clock ticks used so far by each of `pids` still there."""
    ticks = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def thread_times(pids: list[int]) -> dict[tuple[int, int], tuple[int, int]]:
    """(nanoseconds on a core, nanoseconds runnable waiting for one) so far, of each
    thread of `pids` still there; empty where the kernel keeps no such statistics."""
    times = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(PROC / str(pid) / "task")]
        except OSError:
            continue
        for tid in tids:
            try:
                text = (PROC / str(pid) / "task" / str(tid) / "schedstat").read_text()
            except OSError:
                continue
            running, waiting, _slices = (int(v) for v in text.split())
            times[pid, tid] = (running, waiting)
    return times


def machine_ticks() -> tuple[int, int]:
    """(all, idle) clock ticks of the machine so far; idle includes waiting for I/O."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(v) for v in first[:8]]  # guest time is already in user and nice
    return sum(values), values[3] + values[4]


@dataclass
class Usage:
    """CPU microseconds a task of each party, and the machine's busy share (0-1); the
    microseconds a task the worker's threads waited for a core, and the share of the
    window (0-1) its busiest thread was on a core or waiting for one (None without
    scheduler statistics)."""

    worker: float
    servers: dict[str, float]
    busy: float
    waited: float | None = None
    busiest: float | None = None


class Window:
    """Counts what the processes of a run use from `__init__` to `close`."""

    def __init__(self, worker_pid: int) -> None:
        self.groups = {"worker": descendants(worker_pid)}
        for column, name in SERVERS.items():
            self.groups[column] = named(name)
        self.begin = {column: cpu_ticks(pids) for column, pids in self.groups.items()}
        self.threads = thread_times(self.groups["worker"])
        self.machine = machine_ticks()
        self.started = time.perf_counter()

    def close(self, tasks: int) -> Usage | None:
        """Usage per task over the window, `tasks` done in it; None without /proc."""
        used = {}
        for column, pids in self.groups.items():
            now, then = cpu_ticks(pids), self.begin[column]
            # A process gone by now is left out: its ticks at the start would go negative.
            used[column] = sum(ticks - then[pid] for pid, ticks in now.items() if pid in then)
        total, idle = (now - then for now, then in zip(machine_ticks(), self.machine, strict=True))
        elapsed = time.perf_counter() - self.started
        threads = thread_times(self.groups["worker"])
        if tasks <= 0 or total <= 0:
            return None
        per_task = {c: 1e6 * ticks / os.sysconf("SC_CLK_TCK") / tasks for c, ticks in used.items()}
        servers = {c: per_task[c] for c in SERVERS if self.groups[c]}
        # (on a core, waiting for one) of each thread over the window, in ns; a thread
        # started in the window (the loop's, once boot hands over) counts whole.
        spans = []
        for key, (run, wait) in threads.items():
            run_before, wait_before = self.threads.get(key, (0, 0))
            spans.append((run - run_before, wait - wait_before))
        waited = sum(wait for _, wait in spans) / 1e3 / tasks if spans else None
        busiest = max(run + wait for run, wait in spans) / 1e9 / elapsed if spans else None
        return Usage(per_task["worker"], servers, 1 - idle / total, waited, busiest)
