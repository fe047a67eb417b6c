"""CPU time per task from /proc: what a worker's processes, the broker and Redis spent
while a counted window of tasks drained, and how busy the whole machine was.

It tells a worker that is short of CPU from one that waits: at the same rate, a
worker whose processes and broker use less CPU a task leaves more of the machine
idle, and one that leaves it idle is held back by a hand-off, not by its code.
Linux only; elsewhere (or for a broker on another machine) the figures are absent.
"""

from __future__ import annotations

import os
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
    """CPU microseconds a task of each party, and the machine's busy share (0-1)."""

    worker: float
    servers: dict[str, float]
    busy: float


class Window:
    """Counts what the processes of a run use from `__init__` to `close`."""

    def __init__(self, worker_pid: int) -> None:
        self.groups = {"worker": descendants(worker_pid)}
        for column, name in SERVERS.items():
            self.groups[column] = named(name)
        self.begin = {column: cpu_ticks(pids) for column, pids in self.groups.items()}
        self.machine = machine_ticks()

    def close(self, tasks: int) -> Usage | None:
        """Usage per task over the window, `tasks` done in it; None without /proc."""
        used = {}
        for column, pids in self.groups.items():
            now, then = cpu_ticks(pids), self.begin[column]
            # A process gone by now is left out: its ticks at the start would go negative.
            used[column] = sum(ticks - then[pid] for pid, ticks in now.items() if pid in then)
        total, idle = (now - then for now, then in zip(machine_ticks(), self.machine, strict=True))
        if tasks <= 0 or total <= 0:
            return None
        per_task = {c: 1e6 * ticks / os.sysconf("SC_CLK_TCK") / tasks for c, ticks in used.items()}
        servers = {c: per_task[c] for c in SERVERS if self.groups[c]}
        return Usage(per_task["worker"], servers, 1 - idle / total)
