"""Worker throughput: N pre-published no-op tasks (each increments a Redis counter),
drained by a `bootkit start` subprocess, for each pool kind.

    uv run --no-sync python bench/throughput.py [--n 20000] [--broker amqp://...] [--rounds 1]

The clock runs from the worker's `kernel_ready` event to the counter reaching N, so
boot time and publishing are not counted. Needs RabbitMQ (or the broker given) and
Redis on 127.0.0.1:6379 (db 12 holds the counter).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from kombu.connection import Connection

from bootkit_amqp_consumer.protocol import build

REPO = Path(__file__).resolve().parents[1]
COUNTER_DB = "redis://127.0.0.1:6379/12"
TASKS = """
import redis
from bootkit_amqp_consumer import App

app = App("bench")
_counter = redis.Redis.from_url("{db}")


@app.task(name="bench.noop", ignore_result=True)
def noop(key):
    _counter.incr(key)
"""


def publish(broker: str, queue: str, n: int, key: str) -> float:
    """Publish `n` bench.noop messages to `queue`; return the seconds it took."""
    began = time.perf_counter()
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
    return time.perf_counter() - began


def run_worker(broker: str, pool: str, concurrency: int, n: int, folder: Path) -> float:
    """Drain `n` tasks with one worker; return tasks per second."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    key = f"bench:{queue}"
    counter = redis.Redis.from_url(COUNTER_DB)
    publish(broker, queue, n, key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
    env["PYTHONPATH"] = str(folder)
    env["BOOTKIT_STATE_DIR"] = str(folder / "state")
    args = [sys.executable, "-m", "bootkit", "--loglevel", "warning", "--log-format", "json"]
    args += ["start", "-A", "bench_tasks:app", "-P", pool, "-c", str(concurrency), "-Q", queue]
    args += ["--broker", broker, "--result-backend", COUNTER_DB]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        # At warning level the worker prints nothing when all is well; its ready moment
        # is when the first task lands, which the counter shows.
        deadline = time.monotonic() + 120
        while int(counter.get(key) or 0) == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker did not start consuming: {proc.poll()}")
            time.sleep(0.001)
        began, first = time.perf_counter(), int(counter.get(key) or 0)
        while (done := int(counter.get(key) or 0)) < n:
            if time.monotonic() > deadline + 600:
                raise RuntimeError(f"only {done} of {n} tasks done")
            time.sleep(0.005)
        return (n - first) / (time.perf_counter() - began)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        counter.delete(key)
        with Connection(broker) as conn:
            conn.channel().queue_delete(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_tasks.py").write_text(TASKS.format(db=COUNTER_DB))
        print("bootkit worker throughput")
        print(f"date:     {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
        print(f"machine:  nproc={os.cpu_count()}, {platform.machine()}, load {os.getloadavg()}")
        print(f"python:   {platform.python_implementation()} {platform.python_version()}")
        print(f"broker:   {options.broker}; N={options.n}; counter in {COUNTER_DB}")
        print(f"command:  python bench/throughput.py {' '.join(sys.argv[1:])}")
        results: dict[str, list[float]] = {}
        for _ in range(options.rounds):
            for pool, concurrency in (
                ("solo", 1),
                ("threads", options.concurrency),
                ("prefork", options.concurrency),
            ):
                label = f"{pool} -c {concurrency}"
                rate = run_worker(options.broker, pool, concurrency, options.n, folder)
                results.setdefault(label, []).append(rate)
                print(f"  {label:<14} {rate:8.0f} tasks/s", flush=True)
        print(
            "median tasks/s:",
            json.dumps({k: round(statistics.median(v)) for k, v in results.items()}),
        )


if __name__ == "__main__":
    main()
