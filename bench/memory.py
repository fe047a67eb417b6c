"""Worker memory (RSS, idle after boot and after N no-op tasks): bootkit against Celery 5.7.

    uv run --no-sync python bench/memory.py [--n 10000] [--rounds 3] [--broker URL]

Two runs per variant in every round, each a fresh worker on a queue of its own, filled
before it starts: "idle" holds one task, "after N" holds N (pre-published, drained).
Each task increments a Redis counter (db 12), the task modules being throughput.py's;
once the counter shows all done the worker is left idle for 1 s, then VmRSS from
/proc/PID/status is summed over the worker and all its descendants (the pool's
processes with prefork). PSS (from /proc/PID/smaps_rollup, shared pages split among
the processes sharing them) is shown beside it. Pools at matched concurrency: solo
(1), threads (2) and prefork (2), bootkit and Celery alternated variant by variant.
Every run has a node name of its own; queues and counters are deleted afterwards.
The floor is the RSS of an interpreter that has only imported what both workers here
must (kombu's AMQP transport, and redis-py for the tasks' counter).
Needs the broker (RabbitMQ on loopback by default) and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from boot import delete_queues, shown
from latency import POOLS, log_tail, start_worker, stop_worker, worker_command
from peers import prepare, print_context, run, version
from throughput import BOOTKIT_TASKS, CELERY_TASKS, COUNTER_DB, publish_celery

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 600.0  # seconds a run may take to finish its tasks before it counts as failed
IDLE = 1.0  # seconds the worker is left idle before the reading
TARGET = 0.5  # bootkit's RSS at most half of Celery's
MIB = 1024.0  # /proc reports kB (KiB)


@dataclass
class Sample:
    rss: float  # KiB, summed over the process tree
    pss: float  # KiB, summed; 0 where smaps_rollup was unreadable
    processes: int


@dataclass
class Variant:
    label: str
    kind: str  # "bootkit" or "celery"
    pool: str
    concurrency: int
    idle: list[Sample] = field(default_factory=list)
    loaded: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kib(path: Path, field_name: str) -> float:
    """A `Name:   123 kB` field of a /proc file, in KiB; 0 when absent or unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1])
    return 0.0


def sample(root: int) -> Sample:
    pids = descendants(root)
    rss = sum(kib(Path(f"/proc/{pid}/status"), "VmRSS") for pid in pids)
    pss = sum(kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in pids)
    return Sample(rss, pss, len(pids))


def wait_done(proc: subprocess.Popen[bytes], key: str, count: int) -> None:
    """Poll the counter until it shows `count` tasks done; raises if the worker fails."""
    counter = redis.Redis.from_url(COUNTER_DB)
    deadline = time.monotonic() + DEADLINE
    while (done := int(counter.get(key) or 0)) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited {proc.returncode} after {done} of {count}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {count} tasks done in {DEADLINE:.0f} s")
        time.sleep(0.005)


def measure(variant: Variant, broker: str, count: int, folder: Path, marker: str) -> Sample:
    """A fresh worker drains `count` pre-published tasks, idles, and is measured."""
    queue = f"{marker}-{uuid.uuid4().hex[:8]}"
    key = f"bench:{queue}"
    publish_celery(broker, queue, key, count)
    command = worker_command(variant.kind, variant.pool, variant.concurrency, queue, broker, None)
    proc = start_worker(command, folder, queue)
    try:
        try:
            wait_done(proc, key, count)
        except RuntimeError as exc:
            tail = log_tail(folder / f"{queue}.log")
            raise RuntimeError(f"{exc}; last log lines:\n{tail}") from exc
        time.sleep(IDLE)  # the idle second the reading is about, not a wait for an event
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited {proc.returncode} while idle")
        return sample(proc.pid)
    finally:
        stop_worker(proc)
        redis.Redis.from_url(COUNTER_DB).delete(key)
        try:
            delete_queues(broker, queue, [queue])
        except Exception as exc:  # the broker is gone: say what is left, carry on
            print(f"note: could not delete queue {queue}: {exc!r}", file=sys.stderr)


FLOOR_IMPORTS = "kombu.transport.pyamqp, amqp, redis"


def floor_rss() -> float:
    """VmRSS in MiB of a fresh interpreter that has imported FLOOR_IMPORTS and no more."""
    code = (
        f"import {FLOOR_IMPORTS}\n"
        "print(next(line.split()[1] for line in open('/proc/self/status')"
        " if line.startswith('VmRSS:')))"
    )
    done = run([sys.executable, "-c", code])
    return int(done.stdout.strip()) / 1024  # VmRSS is in kB


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=10_000, help="tasks of the 'after N' run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    options = parser.parse_args(argv)
    if options.n < 1 or options.rounds < 1:
        parser.error("--n and --rounds must be at least 1")

    load_before = os.getloadavg()
    peer = prepare(REPO)  # SIGTERM unwinds through `measure`, which stops its worker
    marker = f"bench-mem-{uuid.uuid4().hex[:8]}"
    rows = [
        Variant(f"{kind} {pool} -c {c}", kind, pool, c)
        for pool, c in POOLS
        for kind in ("bootkit", "celery")
    ]
    with tempfile.TemporaryDirectory(prefix="bootkit-bench-mem-") as tmp:
        folder = Path(tmp)
        for name, text in (("bench_bootkit.py", BOOTKIT_TASKS), ("bench_celery.py", CELERY_TASKS)):
            (folder / name).write_text(text.replace("{db}", COUNTER_DB), encoding="utf-8")
        for _ in range(options.rounds):
            for variant in rows:
                for count, samples in ((1, variant.idle), (options.n, variant.loaded)):
                    try:
                        samples.append(measure(variant, options.broker, count, folder, marker))
                    except RuntimeError as exc:
                        print(f"  {variant.label}, {count} tasks: failed: {exc}", file=sys.stderr)
                        variant.failures.append(f"{count} tasks: {str(exc).splitlines()[0]}")
    report(rows, options, peer, marker, load_before, floor_rss())


def report(
    rows: list[Variant],
    options: argparse.Namespace,
    peer: Path,
    marker: str,
    load_before: tuple[float, float, float],
    floor: float,
) -> None:

    def rss(samples: list[Sample]) -> float | None:
        return statistics.median(s.rss for s in samples) / MIB if samples else None

    def mib(samples: list[Sample], pss: bool = False) -> tuple[str, str]:
        if not samples:
            return "failed", "-"
        values = [(s.pss if pss else s.rss) / MIB for s in samples]
        return f"{statistics.median(values):.1f}", f"{min(values):.1f}-{max(values):.1f}"

    def ratio(ours: list[Sample], theirs: list[Sample]) -> float | None:
        mine, other = rss(ours), rss(theirs)
        return None if mine is None or not other else mine / other

    celery_version = run([str(peer), "-c", "import celery; print(celery.__version__)"])
    print(f"# worker memory, idle and after {options.n} tasks, bootkit vs Celery ({marker})")
    print_context(load_before)
    print(
        f"versions: bootkit {version('bootkit')}, "
        f"bootkit-amqp-consumer {version('bootkit-amqp-consumer')}; "
        f"peer celery {celery_version.stdout.strip()}"
    )
    print(f"broker:   {options.broker}; counters in {COUNTER_DB}")
    print(
        f"runs:     {options.rounds} rounds alternating the variants; per variant and round "
        f"a worker with 1 task and one with N={options.n}, read {IDLE:.0f} s after the last"
    )
    print(f"command:  {shlex.join(['uv', 'run', '--no-sync', 'python', *sys.argv])}")
    print()
    print(
        "| variant | processes | idle RSS MiB median | idle min-max | after N RSS MiB median "
        "| after N min-max | idle PSS MiB | after N PSS MiB | bootkit/celery idle "
        "| bootkit/celery after N |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    by_label = {row.label: row for row in rows}
    for row in rows:
        idle_median, idle_range = mib(row.idle)
        loaded_median, loaded_range = mib(row.loaded)
        idle_pss, _ = mib(row.idle, pss=True)
        loaded_pss, _ = mib(row.loaded, pss=True)
        counts = sorted({s.processes for s in row.idle + row.loaded})
        ratios = ("", "")
        if row.kind == "bootkit":
            theirs = by_label[row.label.replace("bootkit", "celery", 1)]
            ratios = (
                shown(ratio(row.idle, theirs.idle)),
                shown(ratio(row.loaded, theirs.loaded)),
            )
        print(
            f"| {row.label} | {'/'.join(map(str, counts)) or '-'} | {idle_median} | {idle_range} "
            f"| {loaded_median} | {loaded_range} | {idle_pss} | {loaded_pss} "
            f"| {ratios[0]} | {ratios[1]} |"
        )
    print()
    for row in rows:
        for failure in row.failures:
            print(f"note: a run of '{row.label}' failed: {failure}")
    print(f"floor: a Python that imported {FLOOR_IMPORTS} and no more: {floor:.1f} MiB RSS")
    for row in rows:
        if row.kind == "celery" and (idle := rss(row.idle)) is not None:
            processes = max(sample.processes for sample in row.idle)
            least = floor * processes  # each process has at least those imports mapped
            print(
                f"half of {row.label}'s idle RSS is {idle * TARGET:.1f} MiB, the floor for "
                f"{processes} process{'es' if processes > 1 else ''} {least:.1f} MiB: "
                f"{'within' if idle * TARGET >= least else 'below'} what any worker can do"
            )
    for row in rows:
        if row.kind != "bootkit":
            continue
        theirs = by_label[row.label.replace("bootkit", "celery", 1)]
        idle_ratio, loaded_ratio = ratio(row.idle, theirs.idle), ratio(row.loaded, theirs.loaded)
        met = (
            idle_ratio is not None
            and loaded_ratio is not None
            and idle_ratio <= TARGET
            and loaded_ratio <= TARGET
            and not row.failures
        )
        print(
            f"target for {row.label} (RSS idle and after N at most half of Celery's): "
            f"{'met' if met else 'NOT met'} (idle {shown(idle_ratio)}, "
            f"after N {shown(loaded_ratio)})"
        )


if __name__ == "__main__":
    main()
