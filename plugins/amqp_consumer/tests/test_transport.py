"""`BufferedTransport` and `WorkerConnection`: against a real RabbitMQ, and against a
local TCP peer that writes frames byte for byte the way the test decides.

The local peer is a listening socket on 127.0.0.1: the transport connects to it (the
kernel completes the connection before ``accept``), the test accepts and writes the
frames itself, so every split of a frame across reads is exact and no thread is needed.
"""

from __future__ import annotations

import math
import os
import select
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest
from amqp.exceptions import UnexpectedFrame  # type: ignore[import-untyped, unused-ignore]
from amqp.transport import (  # type: ignore[import-untyped, unused-ignore]
    AMQP_PROTOCOL_HEADER,
    TCPTransport,
)
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer
from kombu.transport import redis as kombu_redis

from bootkit_amqp_consumer.redis_transport import RedisTransport
from bootkit_amqp_consumer.transport import (
    RECV_SIZE,
    AMQPTransport,
    BufferedTransport,
    WorkerConnection,
    drain,
    frame_ready,
    waitables,
)

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/15"
TIMEOUT = 4.0  # every wait below gives up after this long
SHORT = 0.2  # the socket timeout a read is expected to run into


# -- RabbitMQ through WorkerConnection ---------------------------------------------------


def connect(url: str = AMQP_URL) -> Any:
    """A connected `WorkerConnection`; fails the test (never skips it) when the broker is down."""
    conn = WorkerConnection(url, connect_timeout=2)
    try:
        conn.connect()
    except Exception as exc:
        conn.release()
        pytest.fail(f"broker not reachable at {url}: {type(exc).__name__}: {exc}")
    return conn


@pytest.fixture
def amqp() -> Iterator[Any]:
    conn = connect()
    yield conn
    conn.release()


@pytest.fixture
def queue_name(amqp: Any) -> Iterator[str]:
    """A queue of the test's own, declared now and deleted afterwards."""
    name = f"test-transport-{uuid.uuid4().hex[:8]}"
    amqp.default_channel.queue_declare(name, durable=False, auto_delete=False)
    yield name
    with closing(connect()) as conn:
        conn.default_channel.queue_delete(name)


def publish(queue: str, bodies: list[bytes]) -> None:
    with closing(connect()) as conn:
        channel = conn.default_channel
        producer = Producer(channel)
        for body in bodies:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                content_type="application/octet-stream",
                content_encoding="binary",
            )
        channel.basic_qos(0, 1, False)  # a round trip on the channel: every publish is in


def drain_until(conn: Any, done: Callable[[], bool]) -> int:
    """Wait on the socket and `drain` until `done()`, the way the consumer's loop does;
    the number of drains it took."""
    sock = conn.connection.sock
    deadline = time.monotonic() + TIMEOUT
    drains = 0
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"not done after {drains} drains in {TIMEOUT:g}s")
        select.select([sock], [], [], min(remaining, 0.5))
        drain(conn)
        drains += 1
        assert not frame_ready(conn), "a whole frame was left in the buffer after a drain"
    return drains


def test_amqp_urls_get_a_buffered_transport(amqp: Any) -> None:
    assert isinstance(amqp.transport, AMQPTransport)
    assert amqp.transport.driver_type == "amqp"  # what the consumer coalesces acks on
    assert isinstance(amqp.connection.transport, BufferedTransport)
    assert amqp.connection.sock is amqp.connection.transport.sock
    with closing(Connection(AMQP_URL, connect_timeout=2)) as plain:
        plain.connect()
        assert type(plain.connection.transport) is TCPTransport  # kombu's own stays as it is


def test_redis_urls_get_kombus_redis_transport_with_one_client_a_channel() -> None:
    conn = connect(REDIS_URL)
    try:
        assert type(conn.transport) is RedisTransport
        assert isinstance(conn.transport, kombu_redis.Transport)
        assert type(Connection(REDIS_URL).transport) is kombu_redis.Transport  # kombu's own
        channel = conn.default_channel
        client = channel._create_client()
        assert channel._create_client() is client  # kombu's own builds one a command
        with channel.conn_or_acquire() as acquired:
            assert acquired is client
        assert channel._create_client(asynchronous=True) is not client  # the poller's
        channel._disconnect_pools()  # as a reconnect does: a new pool, so a new client
        fresh = channel._create_client()
        assert fresh is not client
        assert fresh.connection_pool is channel.pool
        assert fresh.ping()
        name = f"test-transport-{uuid.uuid4().hex[:8]}"
        queue = conn.SimpleQueue(name)
        try:
            queue.put(b"hello", content_type="application/octet-stream", content_encoding="binary")
            message = queue.get(timeout=TIMEOUT)
            message.ack()
            assert message.body == b"hello"
            assert not frame_ready(conn)
        finally:
            queue.queue.delete()
            queue.close()
    finally:
        conn.release()


def test_on_redis_the_loop_waits_on_kombus_sockets_and_drains_what_they_bring() -> None:
    conn = connect(REDIS_URL)
    name = f"test-transport-{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []
    try:
        channel = conn.channel()
        queue = Queue(name, channel=channel)
        queue.declare()

        def on_message(message: Any) -> None:
            got.append(message.body)
            message.ack()

        consumer = Consumer(channel, [queue], on_message=on_message)
        consumer.consume()
        Producer(conn.channel()).publish(
            b"one", routing_key=name, content_type="text/plain", content_encoding="utf-8"
        )
        deadline = time.monotonic() + TIMEOUT
        while not got:
            fds = waitables(conn)
            assert fds, "no socket to wait on: kombu's poller has no BRPOP out"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"nothing delivered in {TIMEOUT:g}s")
            readable, _, _ = select.select(fds, [], [], remaining)
            drain(conn, readable, idle=not readable)
        assert got == [b"one"]
        queue.delete()
    finally:
        conn.release()


def test_polled_transports_have_nothing_to_wait_on() -> None:
    with closing(Connection("memory://")) as conn:
        conn.connect()
        assert waitables(conn) is None


def test_as_uri_reads_like_kombus() -> None:
    ours, theirs = WorkerConnection(AMQP_URL), Connection(AMQP_URL)
    assert ours.as_uri() == theirs.as_uri() == "amqp://guest:**@127.0.0.1:5672//"
    assert ours.as_uri(include_password=True) == theirs.as_uri(include_password=True)
    assert WorkerConnection(REDIS_URL).as_uri() == Connection(REDIS_URL).as_uri()


def test_clone_keeps_the_buffered_transport(amqp: Any) -> None:
    clone = amqp.clone()
    try:
        assert type(clone) is WorkerConnection
        assert clone.as_uri() == amqp.as_uri()
        clone.connect()
        assert isinstance(clone.connection.transport, BufferedTransport)
    finally:
        clone.release()


def test_many_messages_drained_arrive_in_order_and_none_is_lost(amqp: Any, queue_name: str) -> None:
    sent = [f"message {i}".encode() for i in range(500)]
    publish(queue_name, sent)
    received: list[bytes] = []
    consumer = Consumer(
        amqp.channel(),
        [Queue(queue_name, no_declare=True)],
        on_message=lambda message: received.append(message.body),
        no_ack=True,
    )
    consumer.consume()

    drain_until(amqp, lambda: len(received) >= len(sent))

    assert received == sent


def test_a_delivery_reads_as_py_amqp_reads_it(amqp: Any, queue_name: str) -> None:
    # basic.deliver's arguments are read inline (frames.frame_handler): a named
    # exchange, a routing key that is not ASCII and a redelivery come out as
    # py-amqp's own reader gives them.
    exchange, key = f"test-transport-x-{uuid.uuid4().hex[:6]}", "clé-ünïcode"
    channel = amqp.channel()
    channel.exchange_declare(exchange, "direct", auto_delete=True)
    channel.queue_bind(queue_name, exchange, key)
    Producer(channel).publish(b"once", exchange=exchange, routing_key=key)
    received: list[Any] = []

    def on_message(message: Any) -> None:
        received.append(message)
        if len(received) == 1:
            message.requeue()

    consumer = Consumer(channel, [Queue(queue_name, no_declare=True)], on_message=on_message)
    consumer.consume()
    drain_until(amqp, lambda: len(received) == 2)

    first, again = (m.delivery_info for m in received)
    tag = consumer._active_tags[queue_name]  # kombu keeps the tag there
    assert first == {
        "consumer_tag": tag,
        "delivery_tag": 1,
        "redelivered": False,
        "exchange": exchange,
        "routing_key": key,
    }
    assert again == {**first, "delivery_tag": 2, "redelivered": True}
    assert received[1].body == b"once"
    received[1].ack()


def test_a_body_larger_than_a_read_and_a_frame_arrives_intact(amqp: Any, queue_name: str) -> None:
    body = os.urandom(3 * 1024 * 1024)
    frame_max = amqp.connection.frame_max
    assert len(body) > 2 * RECV_SIZE  # many reads
    assert len(body) > 2 * frame_max  # many body frames
    publish(queue_name, [body])
    received: list[bytes] = []
    consumer = Consumer(
        amqp.channel(),
        [Queue(queue_name, no_declare=True)],
        on_message=lambda message: received.append(message.body),
        no_ack=True,
    )
    consumer.consume()

    drains = drain_until(amqp, lambda: bool(received))

    assert len(received) == 1
    assert received[0] == body
    assert drains >= math.ceil(len(body) / RECV_SIZE)  # each drain reads at most RECV_SIZE


def test_a_drain_events_timeout_leaves_the_connection_usable(amqp: Any, queue_name: str) -> None:
    received: list[bytes] = []
    consumer = Consumer(
        amqp.channel(),
        [Queue(queue_name, no_declare=True)],
        on_message=lambda message: received.append(message.body),
        no_ack=True,
    )
    consumer.consume()
    with pytest.raises(TimeoutError):
        amqp.drain_events(timeout=SHORT)
    publish(queue_name, [b"after the timeout"])
    amqp.drain_events(timeout=TIMEOUT)
    assert received == [b"after the timeout"]


# -- a local peer writing the frames -----------------------------------------------------


def frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


@contextmanager
def peer() -> Iterator[tuple[BufferedTransport, socket.socket]]:
    """A connected `BufferedTransport` (socket timeout SHORT) and the server's end of it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        transport = BufferedTransport(
            f"127.0.0.1:{listener.getsockname()[1]}", connect_timeout=TIMEOUT
        )
        transport.connect()
        try:
            server, _ = listener.accept()
            with server:
                server.settimeout(TIMEOUT)
                header = b""
                while len(header) < len(AMQP_PROTOCOL_HEADER):
                    chunk = server.recv(len(AMQP_PROTOCOL_HEADER) - len(header))
                    assert chunk, "the transport closed before sending the protocol header"
                    header += chunk
                assert header == AMQP_PROTOCOL_HEADER
                transport.sock.settimeout(SHORT)
                yield transport, server
        finally:
            transport.close()


PAYLOAD = bytes(range(256)) * 4
WHOLE = frame(1, 7, PAYLOAD)


@pytest.mark.parametrize(
    "split",
    [1, 3, 7, 8, len(WHOLE) // 2, len(WHOLE) - 1],
    ids=["type", "in-header", "header", "first-byte", "half", "all-but-end"],
)
def test_a_partial_frame_survives_a_timeout(split: int) -> None:
    with peer() as (transport, server):
        server.sendall(WHOLE[:split])
        assert readable(transport.sock, TIMEOUT)

        with pytest.raises(TimeoutError):
            transport.read_frame()

        assert not readable(transport.sock, 0), "the first part was not taken off the socket"
        assert not transport.frame_ready()
        assert transport.connected
        server.sendall(WHOLE[split:])
        transport.sock.settimeout(TIMEOUT)
        assert transport.read_frame() == (1, 7, PAYLOAD)
        assert not transport.frame_ready()


def test_frames_written_together_are_read_one_by_one_from_the_buffer() -> None:
    first, second, third = frame(1, 1, b"one"), frame(2, 1, b""), frame(3, 2, PAYLOAD)
    with peer() as (transport, server):
        server.sendall(first + second + third[:5])
        assert readable(transport.sock, TIMEOUT)

        assert transport.read_frame() == (1, 1, b"one")
        assert transport.frame_ready()  # the second is whole in the buffer already
        assert transport.read_frame() == (2, 1, b"")
        assert not transport.frame_ready()
        with pytest.raises(TimeoutError):
            transport.read_frame()
        server.sendall(third[5:])
        transport.sock.settimeout(TIMEOUT)
        assert transport.read_frame() == (3, 2, PAYLOAD)


@pytest.mark.parametrize("end", [0x00, 0xCD, 0xFF], ids=lambda end: f"{end:#04x}")
def test_a_frame_whose_end_octet_is_not_0xce_is_unexpected(end: int) -> None:
    with peer() as (transport, server):
        server.sendall(frame(1, 0, PAYLOAD, end=end))
        transport.sock.settimeout(TIMEOUT)
        with pytest.raises(UnexpectedFrame, match=f"{end:#04x}"):
            transport.read_frame()


def test_the_peer_closing_mid_frame_is_a_connection_error_not_a_timeout() -> None:
    with peer() as (transport, server):
        server.sendall(WHOLE[:10])
        server.shutdown(socket.SHUT_WR)
        transport.sock.settimeout(TIMEOUT)
        with pytest.raises(OSError, match="closed") as raised:
            transport.read_frame()
        assert not isinstance(raised.value, TimeoutError)
        assert not transport.connected
