"""The receive path of one task message, in memory: the worker's AMQP connection
against kombu's own, on the same frames; and the whole of a solo worker's path, from
the frames to the end of the task.

    uv run --no-sync python bench/receive.py [--batches 200] [--rounds 12] [--broker URL]

A real Celery message's three frames (basic.deliver, content header, body) are
captured once; then batches of 100 copies are put straight into the connection's
receive buffer and handed to a kombu `Consumer` (no broker round trip, no ack), so
the figure is the CPU a delivery costs from bytes to `on_message`. kombu's stock
connection reads frames through py-amqp's own socket reader; it is given the same
bytes through a socket pair. The third row puts the same frames before the worker's
own `TaskConsumer` with the solo pool: decoding, reserving, the early ack (counted,
not written: the deliveries are made up), running a task that does nothing, and
settling it. Best of the rounds, in microseconds a message.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer

from bootkit_amqp_consumer.protocol import build
from bootkit_amqp_consumer.transport import WorkerConnection, drain

PER_BATCH = 100


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def capture(broker: str) -> tuple[bytes, bytes]:
    """A Celery task message's content header and body frames, as RabbitMQ sends them."""
    queue = f"bench-receive-{uuid.uuid4().hex[:8]}"
    message = build("bench.noop", ["key"], {}, task_id=str(uuid.uuid4()), ignore_result=True)
    conn = WorkerConnection(broker)
    try:
        conn.connect()
        channel = conn.channel()
        channel.queue_declare(queue, auto_delete=False)
        Producer(channel).publish(
            message.body,
            exchange="",
            routing_key=queue,
            serializer="json",
            headers=message.headers,
            **message.properties,
        )
        transport = conn.connection.transport
        frames: list[tuple[int, int, bytes]] = []
        read = transport.read_frame

        def keep(unpack: Any = None) -> tuple[int, int, bytes]:
            got: tuple[int, int, bytes] = read()
            frames.append(got)
            return got

        transport.read_frame = keep
        channel.basic_get(queue, no_ack=True)
        transport.read_frame = read
        channel.queue_delete(queue)
    finally:
        conn.release()
    header, body = (payload for kind, _, payload in frames if kind in (2, 3))
    return header, body


def batch(channel: int, tag: str, queue: str, header: bytes, body: bytes, first: int = 0) -> bytes:
    """PER_BATCH deliveries of the captured message, delivery tags after `first`."""
    out = []
    for n in range(first + 1, first + PER_BATCH + 1):
        args = struct.pack(">HHB", 60, 60, len(tag)) + tag.encode()
        args += struct.pack(">QBB", n, 0, 0) + struct.pack(">B", len(queue)) + queue.encode()
        out += [frame(1, channel, args), frame(2, channel, header), frame(3, channel, body)]
    return b"".join(out)


def best_of(
    feed: Callable[[bytes], None], pump: Callable[[], None], data: bytes, args: Any
) -> float:
    """Microseconds a message, the best round of `args.rounds`."""
    best = float("inf")
    for _ in range(args.rounds):
        began = time.perf_counter()
        for _ in range(args.batches):
            feed(data)
            pump()
        best = min(best, (time.perf_counter() - began) / (args.batches * PER_BATCH))
    return best * 1e6


def run(kind: str, header: bytes, body: bytes, args: Any) -> float:
    queue = f"bench-receive-{uuid.uuid4().hex[:8]}"
    opener: Any = WorkerConnection if kind == "bootkit" else Connection
    conn = opener(args.broker)
    conn.connect()
    try:
        channel = conn.channel()
        received = 0

        def on_message(message: Any) -> None:
            nonlocal received
            received += 1

        consumer = Consumer(
            channel, [Queue(queue, auto_delete=True)], on_message=on_message, no_ack=True
        )
        consumer.consume()
        data = batch(channel.channel_id, consumer._active_tags[queue], queue, header, body)
        if kind == "bootkit":
            return best_of(
                conn.connection.transport._buffer.extend, lambda: drain(conn), data, args
            )
        # py-amqp reads its socket: the same bytes go in through a socket pair.
        amqp = conn.connection
        ours, theirs = socket.socketpair()
        transport = amqp.transport
        real = transport.sock
        transport.sock, transport._quick_recv = theirs, theirs.recv  # what _read uses

        def pump() -> None:
            target = received + PER_BATCH
            while received < target:
                amqp.blocking_read(None)

        try:
            return best_of(ours.sendall, pump, data, args)
        finally:
            transport.sock, transport._quick_recv = real, real.recv
            ours.close()
            theirs.close()
    finally:
        conn.release()


def solo_path(header: bytes, body: bytes, args: Any) -> float:
    """The solo worker's consumer on the captured frames: microseconds a task."""
    import tempfile
    from pathlib import Path
    from types import MappingProxyType

    from bootkit import Settings
    from bootkit.log import configure
    from bootkit_amqp_consumer import App
    from bootkit_amqp_consumer.consumer import TaskConsumer
    from bootkit_amqp_consumer.execution import make_runner
    from bootkit_amqp_consumer.keeper import Keeper
    from bootkit_amqp_consumer.options import WorkerConfig
    from bootkit_amqp_consumer.pools import SoloPool
    from bootkit_amqp_consumer.state import WorkerState
    from bootkit_amqp_consumer.timer import Timer

    configure("warning")  # as the throughput runs: no line a task
    app = App("bench")
    done = 0

    @app.task(name="bench.noop", ignore_result=True)
    def noop(key: str) -> None:
        nonlocal done
        done += 1

    queue = f"bench-receive-{uuid.uuid4().hex[:8]}"
    options = {"broker": args.broker, "pool": "solo", "queues": (queue,)}
    with tempfile.TemporaryDirectory() as state_dir:
        settings = Settings(state_dir=Path(state_dir), options=MappingProxyType(options))
        config = WorkerConfig.from_settings(settings)
    conn = WorkerConnection(args.broker)
    conn.connect()
    timer, keeper = Timer(), Keeper()
    timer.start()
    pool = SoloPool(make_runner(app), keeper)
    pool.start()
    consumer = TaskConsumer(
        app=app,
        config=config,
        pool=pool,
        timer=timer,
        backend=None,
        state=WorkerState(),
        connection=conn,
    )
    try:
        consumer.declare()
        sent: list[int] = []
        consumer.acks._send = lambda tag, multiple: sent.append(tag)  # made-up tags
        assert consumer.subscription is not None
        kombu_consumer = consumer.subscription.consumer
        channel: Any = kombu_consumer.channel
        channel_id: int = channel.channel_id
        tag = kombu_consumer._active_tags[queue]
        buffer = conn.connection.transport._buffer
        consumer.inbox.hold()
        delivered = 0

        def feed(_: bytes) -> None:  # fresh delivery tags each batch: acks are tracked
            nonlocal delivered
            buffer.extend(batch(channel_id, tag, queue, header, body, delivered))
            delivered += PER_BATCH

        def pump() -> None:
            target = done + PER_BATCH
            while done < target:
                drain(conn)
                consumer.inbox.run()
                consumer.acks.flush()

        best = best_of(feed, pump, b"", args)
        consumer.inbox.let_go()
        assert sent, "no task was acknowledged"
        return best
    finally:
        with contextlib.suppress(Exception):
            conn.default_channel.queue_delete(queue)
        conn.release()
        timer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    header, body = capture(args.broker)
    ours = run("bootkit", header, body, args)
    theirs = run("kombu", header, body, args)
    whole = solo_path(header, body, args)
    print("# receive path of a Celery task message, in memory (best of rounds)")
    print(
        f"command: uv run --no-sync python bench/receive.py --batches {args.batches} --rounds {args.rounds}"
    )
    print()
    print("| connection | us a message | bootkit/peer |")
    print("|---|---|---|")
    print(f"| bootkit WorkerConnection | {ours:.1f} | {ours / theirs:.2f} x kombu |")
    print(f"| kombu Connection (py-amqp) | {theirs:.1f} |  |")
    print(f"| bootkit solo consumer, frames to the task's end | {whole:.1f} |  |")


if __name__ == "__main__":
    main()
