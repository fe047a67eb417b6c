"""The slot a prefork child that consumes for itself announces its running task in
(`pool_children`): shared memory the child writes and the parent reads, without a
lock that a killed child could leave held."""

from __future__ import annotations

import contextlib
import mmap
import struct
import time
from dataclasses import dataclass

from bootkit_amqp_consumer.job import Job, Outcome

COUNTED = ("success", "failure", "retry")  # the outcomes a slot counts

# seq (odd while written), started, soft_at, hard_at (monotonic; 0: none), acks_late,
# ignore_result, retries, tasks ended by outcome (COUNTED), the task id and name.
_SLOT = struct.Struct("<Qddd??I3QH200sH200s")


@dataclass(frozen=True)
class Running:
    """A child's slot as the parent reads it: the task it runs (if any) and its counts."""

    task_id: str
    name: str
    started: float
    soft_at: float | None
    hard_at: float | None
    acks_late: bool
    ignore_result: bool
    retries: int
    ended: tuple[int, int, int]  # tasks ended SUCCESS, FAILURE, RETRY


class Slot:
    """One child's announcement of its running task, in shared memory (a seqlock:
    written by the child alone, read by the parent without a lock that a killed child
    could leave held)."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SLOT.size)
        self._seq = 0
        self._ended = [0, 0, 0]
        self._write("", "", 0.0, None, None, False, False, 0)

    def begin(self, job: Job, *, acks_late: bool, ignore_result: bool, retries: int) -> None:
        """The child starts `job` (in the child)."""
        now = time.monotonic()
        soft = None if job.soft_time_limit is None else now + job.soft_time_limit
        hard = None if job.time_limit is None else now + job.time_limit
        self._write(job.id, job.name, now, soft, hard, acks_late, ignore_result, retries)

    def end(self, outcome: Outcome) -> None:
        """The child's task ended with `outcome` (in the child)."""
        with contextlib.suppress(ValueError):
            self._ended[COUNTED.index(outcome.state.lower())] += 1
        self._write("", "", 0.0, None, None, False, False, 0)

    def read(self) -> Running:
        """What the child announced last (in the parent); task_id "" when it runs none."""
        for _ in range(10_000):  # a child killed mid-write leaves the seq odd for good
            before = _SLOT.unpack_from(self._map)
            if before[0] % 2 == 0 and _SLOT.unpack_from(self._map) == before:
                break
        _, started, soft, hard, late, ignore, retries, ok, failed, retried, n, tid, m, name = before
        return Running(
            task_id=tid[:n].decode("utf-8", "replace"),
            name=name[:m].decode("utf-8", "replace"),
            started=started,
            soft_at=soft or None,
            hard_at=hard or None,
            acks_late=late,
            ignore_result=ignore,
            retries=retries,
            ended=(ok, failed, retried),
        )

    def close(self) -> None:
        self._map.close()

    def _write(
        self,
        task_id: str,
        name: str,
        started: float,
        soft: float | None,
        hard: float | None,
        acks_late: bool,
        ignore_result: bool,
        retries: int,
    ) -> None:
        tid, tname = task_id.encode()[:200], name.encode()[:200]
        self._seq += 1  # odd: a reader retries
        struct.pack_into("<Q", self._map, 0, self._seq)
        self._seq += 1
        _SLOT.pack_into(
            self._map,
            0,
            self._seq - 1,
            started,
            soft or 0.0,
            hard or 0.0,
            acks_late,
            ignore_result,
            retries,
            *self._ended,
            len(tid),
            tid,
            len(tname),
            tname,
        )
        struct.pack_into("<Q", self._map, 0, self._seq)


def task_key(running: Running) -> tuple[str, float]:
    """Which run of which task `running` is: its id and when it started."""
    return running.task_id, running.started
