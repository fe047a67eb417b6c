"""Task round trip with a waiting client (p50, p99, mean): bootkit against Celery 5.7.

    uv run --no-sync python bench/latency.py [--n 500] [--rounds 3] [--broker URL]

One client sends a task, waits for its result, and only then sends the next: M times
in a row (``--n``, after ``--warmup`` round trips that are not counted), each round
trip timed with time.perf_counter from just before ``send_task`` to ``.get()``
returning. One more row is the floor: a plain kombu consumer that answers each task
the way Celery's Redis result backend stores a result (``SET`` and ``PUBLISH`` of the
result's meta, in one pipeline) and acks it, the least any worker can do here. The client is the same for both workers: the real Celery client from the
peers' venv (``app.send_task("bench.echo", args=[i], queue=Q).get(timeout=10)``), run
as a small script that prints the timings as JSON. Pools at matched concurrency: solo
(1), threads (2) and prefork (2), bootkit and Celery alternated variant by variant in
every round. Results go to Redis db 13 for both. Readiness is the client's first task
answered (the queue holds it until the worker consumes), within 60 s. Every run has a
queue and node name of its own; the queue, its exchange and the run's result keys are
deleted afterwards. Needs the broker (RabbitMQ on loopback by default) and Redis on
127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from boot import delete_queues, ratio, shown
from peers import (
    PEER_VENV,
    cold_env,
    prepare,
    print_context,
    run,
    version,
)

REPO = Path(__file__).resolve().parents[1]
BACKEND = "redis://127.0.0.1:6379/13"
HOST = platform.node() or "bench"
READY = 60.0  # seconds the worker may take to answer the client's first task
RESULT_TIMEOUT = 10.0  # seconds the client waits for any one result
STOP = 30.0  # seconds a worker may take to exit after SIGTERM before it is killed
POOLS = (("solo", 1), ("threads", 2), ("prefork", 2))
TARGET = 0.5  # bootkit's p50 and p99 at most half of Celery's
FLOOR_LABEL = "kombu answer loop (the floor)"

BOOTKIT_TASKS = """
from bootkit_amqp_consumer import App

app = App("bench")


@app.task(name="bench.echo")
def echo(value):
    return value
"""

CELERY_TASKS = """
from celery import Celery

app = Celery("bench")
app.conf.result_backend = "{backend}"


@app.task(name="bench.echo")
def echo(value):
    return value
"""

FLOOR = """
import datetime
import json
import sys

import redis
from kombu import Connection, Exchange, Queue
from kombu.messaging import Consumer

broker, backend, queue = sys.argv[1], sys.argv[2], sys.argv[3]
results = redis.Redis.from_url(backend)


def on_message(body, message):
    args, _kwargs, _embed = body
    task_id = message.headers["id"]
    key = f"celery-task-meta-{task_id}"
    meta = json.dumps({
        "status": "SUCCESS", "result": args[0], "traceback": None, "children": [],
        "date_done": datetime.datetime.now(datetime.UTC).isoformat(), "task_id": task_id,
    })
    with results.pipeline(transaction=False) as pipe:
        pipe.set(key, meta, ex=86400)
        pipe.publish(key, meta)
        pipe.execute()
    message.ack()


with Connection(broker) as conn:
    channel = conn.channel()
    channel.basic_qos(0, 4, False)
    task_queue = Queue(queue, Exchange(queue, "direct"), routing_key=queue)
    with Consumer(channel, [task_queue], callbacks=[on_message], accept=["json"]):
        while True:
            conn.drain_events()
"""

CLIENT = """
import json
import sys
import time

from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

broker, backend, queue = sys.argv[1], sys.argv[2], sys.argv[3]
n, warmup = int(sys.argv[4]), int(sys.argv[5])
ready_within, result_timeout = float(sys.argv[6]), float(sys.argv[7])
app = Celery("bench-client", broker=broker, backend=backend)

# The first task waits in the queue (declared on publish) until the worker consumes
# it, so its answer says the worker is ready; asked for again each second until then.
probe = app.send_task("bench.echo", args=[-1], queue=queue, task_id=queue + "-ready")
deadline = time.monotonic() + ready_within
while True:
    try:
        probe.get(timeout=1.0)
        break
    except ResultTimeout:
        if time.monotonic() > deadline:
            sys.exit(f"no answer from the worker within {ready_within:.0f} s")

timings = []
for i in range(warmup + n):
    began = time.perf_counter()
    result = app.send_task("bench.echo", args=[i], queue=queue, task_id=f"{queue}-{i}")
    value = result.get(timeout=result_timeout)
    elapsed = time.perf_counter() - began
    if value != i:
        sys.exit(f"task {i} returned {value!r}")
    if i >= warmup:
        timings.append(elapsed)
print(json.dumps(timings))
"""


@dataclass
class Variant:
    label: str
    kind: str  # "bootkit", "celery" or "floor"
    pool: str
    concurrency: int
    p50: list[float] = field(default_factory=list)  # seconds, one per round
    p99: list[float] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def worker_command(
    kind: str, pool: str, concurrency: int, queue: str, broker: str, backend: str | None
) -> list[str]:
    """The worker's command line; the app module is `bench_bootkit` or `bench_celery`."""
    node = f"bench-{uuid.uuid4().hex[:8]}@{HOST}"
    if kind == "floor":
        return [sys.executable, "bench_floor.py", broker, backend or BACKEND, queue]
    if kind == "bootkit":
        args = [sys.executable, "-m", "bootkit", "--loglevel", "warning", "start"]
        args += ["-A", "bench_bootkit:app", "-P", pool, "-c", str(concurrency)]
        args += ["-Q", queue, "-b", broker, "-n", node]
        return args + (["--result-backend", backend] if backend else [])
    args = [str(PEER_VENV / "bin" / "celery"), "-A", "bench_celery", "-b", broker]
    args += ["--result-backend", backend] if backend else []
    args += ["worker", "-P", pool, "-c", str(concurrency), "-Q", queue, "-l", "warning"]
    return [*args, "-n", node]


def start_worker(command: Sequence[str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    """Start a worker in a session of its own, its stderr in `folder`/`name`.log."""
    env = {**cold_env(), "PYTHONPATH": str(folder), "BOOTKIT_STATE_DIR": str(folder / name)}
    with (folder / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group: a kill reaches only this run
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, bounded wait, then SIGKILL for the process and whatever is left of its group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # pool children it left behind (none expected)


def log_tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def clean_up(broker: str, queue: str) -> None:
    """Delete the run's queue and exchange on the broker and its result keys in Redis."""
    try:
        delete_queues(broker, queue, [queue])
    except Exception as exc:  # the broker is gone: say what is left, carry on
        print(f"note: could not delete queue {queue}: {exc!r}", file=sys.stderr)
    results = redis.Redis.from_url(BACKEND)
    if keys := list(results.scan_iter(match=f"*{queue}*", count=1000)):
        results.delete(*keys)


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def measure(
    variant: Variant, broker: str, n: int, warmup: int, folder: Path, peer: Path, marker: str
) -> list[float]:
    """The counted round trips of one run, in seconds; raises RuntimeError if it fails."""
    queue = f"{marker}-{uuid.uuid4().hex[:8]}"
    command = worker_command(
        variant.kind, variant.pool, variant.concurrency, queue, broker, BACKEND
    )
    proc = start_worker(command, folder, queue)
    client = [str(peer), str(folder / "bench_client.py"), broker, BACKEND, queue]
    client += [str(n), str(warmup), str(READY), str(RESULT_TIMEOUT)]
    try:
        try:
            done = subprocess.run(
                client,
                cwd=folder,
                env=cold_env(),
                capture_output=True,
                text=True,
                timeout=READY + RESULT_TIMEOUT * (n + warmup) + 30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"the client did not finish within {exc.timeout:.0f} s") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"client exit {done.returncode}: {done.stderr.strip()[-600:]}\n"
                f"worker exit {proc.poll()}, last log lines:\n{log_tail(folder / f'{queue}.log')}"
            )
        timings = [float(t) for t in json.loads(done.stdout.strip().splitlines()[-1])]
        if len(timings) != n:
            raise RuntimeError(f"the client reported {len(timings)} round trips, not {n}")
        return timings
    finally:
        stop_worker(proc)
        clean_up(broker, queue)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=500, help="counted round trips per run")
    parser.add_argument("--warmup", type=int, default=50, help="round trips not counted")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    options = parser.parse_args(argv)
    if options.n < 1 or options.warmup < 0 or options.rounds < 1:
        parser.error("--n and --rounds must be at least 1, --warmup at least 0")

    load_before = os.getloadavg()
    peer = prepare(REPO)  # SIGTERM unwinds through `measure`, which stops its worker
    marker = f"bench-lat-{uuid.uuid4().hex[:8]}"
    rows = [
        Variant(f"{kind} {pool} -c {c}", kind, pool, c)
        for pool, c in POOLS
        for kind in ("bootkit", "celery")
    ]
    rows.append(Variant(FLOOR_LABEL, "floor", "", 1))
    with tempfile.TemporaryDirectory(prefix="bootkit-bench-lat-") as tmp:
        folder = Path(tmp)
        for name, text in (
            ("bench_bootkit.py", BOOTKIT_TASKS),
            ("bench_celery.py", CELERY_TASKS),
            ("bench_client.py", CLIENT),
            ("bench_floor.py", FLOOR),
        ):
            (folder / name).write_text(text.replace("{backend}", BACKEND), encoding="utf-8")
        for _ in range(options.rounds):
            for variant in rows:
                try:
                    timings = measure(
                        variant, options.broker, options.n, options.warmup, folder, peer, marker
                    )
                except RuntimeError as exc:
                    print(f"  {variant.label}: failed: {exc}", file=sys.stderr)
                    variant.failures.append(str(exc).splitlines()[0])
                    continue
                variant.p50.append(statistics.median(timings))
                variant.p99.append(p99(timings))
                variant.mean.append(statistics.fmean(timings))
    report(rows, options, peer, marker, load_before)


def report(
    rows: list[Variant],
    options: argparse.Namespace,
    peer: Path,
    marker: str,
    load_before: tuple[float, float, float],
) -> None:

    def ms(values: list[float]) -> tuple[str, str]:
        if not values:
            return "failed", "-"
        return (
            f"{statistics.median(values) * 1000:.2f}",
            f"{min(values) * 1000:.2f}-{max(values) * 1000:.2f}",
        )

    celery_version = run([str(peer), "-c", "import celery; print(celery.__version__)"])
    print(f"# task round trip with a waiting client, bootkit vs Celery ({marker})")
    print_context(load_before)
    print(
        f"versions: bootkit {version('bootkit')}, "
        f"bootkit-amqp-consumer {version('bootkit-amqp-consumer')}; "
        f"peer and client celery {celery_version.stdout.strip()}"
    )
    print(f"broker:   {options.broker}; result backend {BACKEND} (both)")
    print(
        f"runs:     {options.rounds} rounds alternating the variants; per run {options.n} "
        f"round trips counted after {options.warmup} warm-up, one at a time, one client"
    )
    print(f"command:  {shlex.join(['uv', 'run', '--no-sync', 'python', *sys.argv])}")
    print()
    print(
        "| variant | p50 ms median | p50 min-max | p99 ms median | p99 min-max "
        "| mean ms median | bootkit/celery p50 | bootkit/celery p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by_label = {row.label: row for row in rows}
    for row in rows:
        p50_median, p50_range = ms(row.p50)
        p99_median, p99_range = ms(row.p99)
        mean_median, _ = ms(row.mean)
        ratios = ("", "")
        if row.kind == "bootkit":
            theirs = by_label[row.label.replace("bootkit", "celery", 1)]
            ratios = (shown(ratio(row.p50, theirs.p50)), shown(ratio(row.p99, theirs.p99)))
        print(
            f"| {row.label} | {p50_median} | {p50_range} | {p99_median} | {p99_range} "
            f"| {mean_median} | {ratios[0]} | {ratios[1]} |"
        )
    print()
    for row in rows:
        for failure in row.failures:
            print(f"note: a run of '{row.label}' failed: {failure}")
    floor = by_label[FLOOR_LABEL]
    for row in rows:
        if row.kind != "celery" or not row.p50 or not floor.p50:
            continue
        half, least = statistics.median(row.p50) * TARGET, statistics.median(floor.p50)
        print(
            f"half of {row.label}'s p50 is {half * 1000:.2f} ms, the floor's p50 "
            f"{least * 1000:.2f} ms: {'within' if half >= least else 'below'} what any worker can do"
        )
    for row in rows:
        if row.kind != "bootkit":
            continue
        theirs = by_label[row.label.replace("bootkit", "celery", 1)]
        p50_ratio, p99_ratio = ratio(row.p50, theirs.p50), ratio(row.p99, theirs.p99)
        met = (
            p50_ratio is not None
            and p99_ratio is not None
            and p50_ratio <= TARGET
            and p99_ratio <= TARGET
            and not row.failures
        )
        print(
            f"target for {row.label} (p50 and p99 at most half of Celery's): "
            f"{'met' if met else 'NOT met'} (p50 {shown(p50_ratio)}, p99 {shown(p99_ratio)})"
        )


if __name__ == "__main__":
    main()
