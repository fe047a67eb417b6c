"""Worker throughput: N pre-published no-op tasks (each increments a Redis counter),
drained by bootkit, Celery 5.7, Dramatiq 2 and a plain kombu consume+ack loop, in
rounds that alternate them, so drift hits all alike.

    uv run --no-sync python bench/throughput.py [--n 20000] [--rounds 3] [--broker URL] [--only bootkit,kombu]

Each variant gets its own queue, filled before it starts; the clock runs from the
first task done to the N-th (the counter shows both), so boot and publishing are not
counted. Pools at matched concurrency: solo (1), threads (2), prefork (2) for bootkit
and Celery (bootkit's prefork children consume for themselves on RabbitMQ, its
default there), and on RabbitMQ bootkit's prefork with the parent's intake
(``--prefork-intake parent``) against Celery's prefork too; Dramatiq 1 process x 1
thread and 2 processes x 1 thread; kombu one consumer with the same prefetch as
bootkit's solo pool (16 on AMQP, 4 elsewhere). One more bootkit row has
Dramatiq's shape: two solo workers on the queue, each on its own connection (what
two `bootkit start -P solo` processes are). Needs the broker and
Redis on 127.0.0.1:6379 (db 12 holds the counters). Peers run from their own venv.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cpu import Usage, Window, descendants
from kombu.connection import Connection
from peers import PEER_VENV, compile_all, peer_python, run, version

from bootkit import Settings
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.protocol import build

REPO = Path(__file__).resolve().parents[1]
COUNTER_DB = "redis://127.0.0.1:6379/12"
TWO_WORKERS = "bootkit solo -c 1, 2 workers"
PARENT = "bootkit prefork -c 2 --prefork-intake parent"  # compared with celery prefork -c 2
SAME_SHAPE = "dramatiq -p 2 -t 1"  # what TWO_WORKERS is compared with
DEADLINE = 600.0  # seconds one variant may take before the run counts as failed

BOOTKIT_TASKS = """
import redis
from bootkit_amqp_consumer import App

app = App("bench")
_counter = redis.Redis.from_url("{db}")


@app.task(name="bench.noop", ignore_result=True)
def noop(key):
    _counter.incr(key)
"""

CELERY_TASKS = """
import redis
from celery import Celery

app = Celery("bench")
app.conf.task_ignore_result = True
_counter = redis.Redis.from_url("{db}")


@app.task(name="bench.noop", ignore_result=True)
def noop(key):
    _counter.incr(key)
"""

DRAMATIQ_TASKS = """
import os

import dramatiq
import redis

url = os.environ["BENCH_BROKER"]
if url.startswith("redis"):
    from dramatiq.brokers.redis import RedisBroker
    dramatiq.set_broker(RedisBroker(url=url))
else:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    if url.endswith("//"):  # kombu's spelling of vhost "/"; pika wants it quoted
        url = url[:-1] + "%2F"
    dramatiq.set_broker(RabbitmqBroker(url=url))
_counter = redis.Redis.from_url("{db}")


@dramatiq.actor(queue_name=os.environ["BENCH_QUEUE"], max_retries=0)
def noop(key):
    _counter.incr(key)


if __name__ == "__main__":
    import sys

    for _ in range(int(sys.argv[1])):
        noop.send(sys.argv[2])
    dramatiq.get_broker().close()
"""

WORKERS = """
import os
import signal
import subprocess
import sys
import time

# Run the command after the count as that many workers; SIGTERM stops them all, and
# so does one of them ending (the bench then sees this process exit).
count, command = int(sys.argv[1]), sys.argv[2:]
workers = [
    subprocess.Popen([*command, "-n", f"bench{i}-{os.getpid()}@bench"]) for i in range(count)
]
signal.signal(signal.SIGTERM, lambda signum, frame: [w.terminate() for w in workers])
while all(w.poll() is None for w in workers):
    time.sleep(0.05)
for w in workers:
    w.terminate()
sys.exit(max(abs(w.wait()) for w in workers))
"""

KOMBU_LOOP = """
import sys

import redis
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer

broker, queue, key = sys.argv[1:4]
n, prefetch = int(sys.argv[4]), int(sys.argv[5])
counter = redis.Redis.from_url("{db}")
done = 0


def on_message(message):
    global done
    counter.incr(key)
    message.ack()
    done += 1


with Connection(broker) as conn:
    channel = conn.channel()
    channel.basic_qos(0, prefetch, False)
    consumer = Consumer(channel, [Queue(queue, no_declare=True)], on_message=on_message)
    consumer.consume()
    while done < n:
        conn.drain_events(timeout=30)
"""


@dataclass
class Variant:
    label: str
    peer: str  # what it is compared with: "celery" (and all peers) or "dramatiq"; "" for peers
    start: Callable[[str, str, Path], subprocess.Popen[bytes]]  # (queue, key, folder)
    publish: Callable[[str, str, int, Path], None]  # (queue, key, n, folder)
    rates: list[float]
    usage: list[Usage] = field(default_factory=list)


def solo_prefetch(broker: str) -> int:
    """The prefetch count of a `-P solo` worker on `broker`, at the defaults."""
    options = {"broker": broker, "pool": "solo"}
    settings = Settings(state_dir=Path(tempfile.gettempdir()), options=options)
    return WorkerConfig.from_settings(settings).prefetch_count


def publish_celery(broker: str, queue: str, key: str, n: int) -> None:
    """`n` protocol-2 bench.noop messages, which bootkit and Celery both read."""
    with Connection(broker) as conn:
        channel = conn.channel()
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        producer = conn.Producer(channel)
        for _ in range(n):
            message = build("bench.noop", [key], {}, task_id=str(uuid.uuid4()), ignore_result=True)
            producer.publish(
                message.body,
                exchange="",
                routing_key=queue,
                serializer="json",
                headers=message.headers,
                **message.properties,
            )


def drain(proc: subprocess.Popen[bytes], key: str, n: int) -> tuple[float, Usage | None]:
    """Tasks per second from the first done to the n-th, and the CPU used meanwhile;
    raises if the worker fails."""
    counter = redis.Redis.from_url(COUNTER_DB)
    deadline = time.monotonic() + DEADLINE
    while int(counter.get(key) or 0) == 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the worker did not start consuming (exit {proc.poll()})")
        time.sleep(0.001)
    window = Window(proc.pid)
    began, first = time.perf_counter(), int(counter.get(key) or 0)
    while (done := int(counter.get(key) or 0)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} tasks done")
        time.sleep(0.005)
    return (n - first) / (time.perf_counter() - began), window.close(n - first)


def variants(broker: str, n: int, peer: Path) -> list[Variant]:
    def spawn(args: list[str], environment: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def env(folder: Path, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        return {**base, "PYTHONPATH": str(folder), "BOOTKIT_STATE_DIR": str(folder / "s"), **extra}

    def bootkit(
        pool: str, c: int, workers: int = 1, extra: tuple[str, ...] = ()
    ) -> Callable[[str, str, Path], subprocess.Popen[bytes]]:
        def start(queue: str, key: str, folder: Path) -> subprocess.Popen[bytes]:
            args = [sys.executable, "-m", "bootkit", "--loglevel", "warning", "start"]
            args += ["-A", "bench_bootkit:app", "-P", pool, "-c", str(c), "-Q", queue, "-b", broker]
            args += extra
            if workers > 1:
                args = [sys.executable, str(folder / "bench_workers.py"), str(workers), *args]
            return spawn(args, env(folder))

        return start

    def celery(pool: str, c: int) -> Callable[[str, str, Path], subprocess.Popen[bytes]]:
        def start(queue: str, key: str, folder: Path) -> subprocess.Popen[bytes]:
            args = [str(PEER_VENV / "bin" / "celery"), "-A", "bench_celery", "-b", broker]
            args += ["worker", "-P", pool, "-c", str(c), "-Q", queue, "-l", "warning"]
            args += ["-n", f"bench-{uuid.uuid4().hex[:6]}@bench"]
            return spawn(args, env(folder))

        return start

    def dramatiq(processes: int) -> Callable[[str, str, Path], subprocess.Popen[bytes]]:
        def start(queue: str, key: str, folder: Path) -> subprocess.Popen[bytes]:
            args = [str(PEER_VENV / "bin" / "dramatiq"), "bench_dramatiq"]
            args += ["-p", str(processes), "-t", "1", "-Q", queue]
            extra = {"BENCH_BROKER": broker, "BENCH_QUEUE": queue}
            return spawn(args, env(folder, **extra))

        return start

    def kombu(queue: str, key: str, folder: Path) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(folder / "bench_kombu.py"), broker, queue, key, str(n)]
        args.append(str(solo_prefetch(broker)))
        return spawn(args, env(folder))

    def celery_messages(queue: str, key: str, count: int, folder: Path) -> None:
        publish_celery(broker, queue, key, count)

    def dramatiq_messages(queue: str, key: str, count: int, folder: Path) -> None:
        extra = {"BENCH_BROKER": broker, "BENCH_QUEUE": queue}
        run(
            [str(peer), str(folder / "bench_dramatiq.py"), str(count), key],
            env=env(folder, **extra),
            cwd=folder,
        )

    rows: list[Variant] = []
    for pool, c in (("solo", 1), ("threads", 2), ("prefork", 2)):
        rows.append(
            Variant(f"bootkit {pool} -c {c}", "celery", bootkit(pool, c), celery_messages, [])
        )
        rows.append(Variant(f"celery {pool} -c {c}", "", celery(pool, c), celery_messages, []))
    if broker.startswith("amqp"):  # elsewhere the parent's intake is the default
        rows.insert(
            6,
            Variant(
                PARENT,
                "celery",
                bootkit("prefork", 2, extra=("--prefork-intake", "parent")),
                celery_messages,
                [],
            ),
        )
    rows.append(
        Variant(TWO_WORKERS, "dramatiq", bootkit("solo", 1, workers=2), celery_messages, [])
    )
    rows.append(Variant("dramatiq -p 1 -t 1", "", dramatiq(1), dramatiq_messages, []))
    rows.append(Variant("dramatiq -p 2 -t 1", "", dramatiq(2), dramatiq_messages, []))
    rows.append(Variant("kombu consume+ack loop", "", kombu, celery_messages, []))
    return rows


def measure(variant: Variant, broker: str, n: int, folder: Path) -> tuple[float, Usage | None]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    key = f"bench:{queue}"
    variant.publish(queue, key, n, folder)
    proc = variant.start(queue, key, folder)
    try:
        return drain(proc, key, n)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in descendants(proc.pid):  # a launcher's workers too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=30)
        redis.Redis.from_url(COUNTER_DB).delete(key)
        with Connection(broker) as conn:
            conn.channel().queue_delete(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words: run only the variants whose label holds one (e.g. bootkit)",
    )
    options = parser.parse_args()
    peer = peer_python()
    compile_all(Path(sys.executable), REPO / "bootkit", REPO / "plugins")
    compile_all(peer, PEER_VENV / "lib")
    with tempfile.TemporaryDirectory(prefix="bootkit-bench-tp-") as tmp:
        folder = Path(tmp)
        for name, text in (
            ("bench_bootkit.py", BOOTKIT_TASKS),
            ("bench_celery.py", CELERY_TASKS),
            ("bench_dramatiq.py", DRAMATIQ_TASKS),
            ("bench_kombu.py", KOMBU_LOOP),
            ("bench_workers.py", WORKERS),
        ):
            (folder / name).write_text(text.replace("{db}", COUNTER_DB), encoding="utf-8")
        rows = variants(options.broker, options.n, peer)
        if words := [w for w in options.only.split(",") if w]:
            rows = [r for r in rows if any(w in r.label for w in words)]
        for _ in range(options.rounds):
            for variant in rows:
                try:
                    rate, usage = measure(variant, options.broker, options.n, folder)
                except RuntimeError as exc:
                    print(f"  {variant.label}: failed: {exc}", file=sys.stderr)
                    continue
                variant.rates.append(rate)
                if usage is not None:
                    variant.usage.append(usage)
    report(rows, options, peer)


def celery_twin(label: str) -> str:
    """The Celery variant a bootkit one is compared with: same pool, same concurrency."""
    return label.replace("bootkit", "celery").split(" --")[0]


def report(rows: list[Variant], options: argparse.Namespace, peer: Path) -> None:
    def median(label: str) -> float:  # 0.0 for a variant not run (--only) or failed
        found = next((r for r in rows if r.label == label), None)
        return statistics.median(found.rates) if found and found.rates else 0.0

    versions = run(
        [
            str(peer),
            "-c",
            "import celery, dramatiq; print(celery.__version__, dramatiq.__version__)",
        ]
    )
    celery_version, dramatiq_version = versions.stdout.split()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# worker throughput, {datetime.date.today()}")
    print(f"machine: {os.cpu_count()} cores, load {load}; Python {platform.python_version()}")
    print(
        f"bootkit-amqp-consumer {version('bootkit-amqp-consumer')}, celery {celery_version}, dramatiq {dramatiq_version}"
    )
    print(f"broker: {options.broker}; N={options.n}; rounds: {options.rounds}")
    print(
        f"command: uv run --no-sync python bench/throughput.py --n {options.n} --rounds {options.rounds} --broker {options.broker}"
        + (f" --only {options.only}" if options.only else "")
    )
    print()
    print("| variant | tasks/s median | min-max | bootkit/peer |")
    print("|---|---|---|---|")
    kombu = median("kombu consume+ack loop")
    best_dramatiq = max(median("dramatiq -p 1 -t 1"), median("dramatiq -p 2 -t 1"))
    for row in rows:
        rates = row.rates or [0.0]
        ratio = ""
        if row.peer == "celery":
            theirs = median(celery_twin(row.label))
            ours = statistics.median(rates)
            parts = [  # against each peer that ran (--only may leave some out)
                f"{ours / value:.2f} x {name}"
                for name, value in (
                    ("celery", theirs),
                    ("best dramatiq", best_dramatiq),
                    ("kombu", kombu),
                )
                if value
            ]
            ratio = ", ".join(parts) or "n/a"
        elif row.peer == "dramatiq":
            theirs = median(SAME_SHAPE)
            ratio = f"{statistics.median(rates) / theirs:.2f} x {SAME_SHAPE}" if theirs else "n/a"
        print(
            f"| {row.label} | {statistics.median(rates):.0f} | {min(rates):.0f}-{max(rates):.0f} | {ratio} |"
        )
    print()
    for row in rows:
        if row.peer != "celery" or " --" in row.label:
            continue  # a row with options of its own is a comparison, not a target
        ours = median(row.label)
        theirs = median(celery_twin(row.label))
        if not (theirs and best_dramatiq and kombu):
            continue  # a peer was not run (--only) or failed: no verdict
        met = ours >= 2 * theirs and ours > best_dramatiq and ours >= 0.6 * kombu
        print(
            f"target for {row.label} (>= 2x celery, > best dramatiq, >= 60% kombu): {'met' if met else 'NOT met'}"
        )
    report_cpu(rows)


def report_cpu(rows: list[Variant]) -> None:
    """Medians of the CPU each party used a task, how busy the machine was, what the
    worker's threads waited for a core and how busy its busiest thread was."""
    measured = [row for row in rows if row.usage]
    if not measured:
        return
    servers = sorted({name for row in measured for u in row.usage for name in u.servers})
    print()
    print("CPU a task while the counted tasks drained (from /proc; medians over the rounds).")
    print("A worker that leaves the machine idle waits on a hand-off; one that keeps it")
    print("busy is short of CPU. 'waits for a core': what the worker's threads spent a task")
    print("runnable but not running; 'busiest thread': the share of the drain its busiest")
    print("thread was running or runnable, near 100 % for the thread the rate is bound by.")
    print()
    print(
        "| variant | worker us/task | "
        + " | ".join(f"{name} us/task" for name in servers)
        + " | all us/task | machine busy | worker waits for a core us/task | busiest thread |"
    )
    print("|---|---|" + "---|" * len(servers) + "---|---|---|---|")
    for row in measured:
        worker = statistics.median(u.worker for u in row.usage)
        theirs = [
            statistics.median(u.servers.get(name, 0.0) for u in row.usage) for name in servers
        ]
        busy = statistics.median(u.busy for u in row.usage)
        waited = [u.waited for u in row.usage if u.waited is not None]
        busiest = [u.busiest for u in row.usage if u.busiest is not None]
        cells = " | ".join(f"{value:.0f}" for value in theirs)
        wait_cell = f"{statistics.median(waited):.0f}" if waited else "n/a"
        busiest_cell = f"{100 * statistics.median(busiest):.0f} %" if busiest else "n/a"
        print(
            f"| {row.label} | {worker:.0f} | {cells} | {worker + sum(theirs):.0f} "
            f"| {100 * busy:.0f} % | {wait_cell} | {busiest_cell} |"
        )


if __name__ == "__main__":
    main()
