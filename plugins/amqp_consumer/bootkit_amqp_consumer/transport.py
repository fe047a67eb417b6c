"""The AMQP transport the worker consumes through: kombu's py-amqp transport with
buffered frame reads and a faster frame handler (`frames`), and the one place that
drains whatever the broker has sent.

py-amqp reads a frame with two or three ``recv`` calls sized to the frame, so a task
message (method, header and body frames) costs six system calls; under load the
broker's frames queue up in the socket, and one large read takes them all. Frames
are parsed from that buffer; a frame that has not fully arrived stays in it, so a
timeout never loses bytes.

Other kombu transports (the embedded filesystem broker) are used as they are, and
so is py-amqp's TLS transport for ``amqps://``; Redis gets kombu's transport with the
worker's takes and acks (`redis_transport`): the loop takes what the queues hold
(`fetch`) and otherwise waits on the sockets kombu's poller has a command out on
(`waitables`), so one wait sees the broker, the loop's inbox and the pool's pipes alike.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time
from collections.abc import Callable, Collection
from struct import Struct, unpack_from
from typing import Any

from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport
from kombu.connection import Connection
from kombu.transport import pyamqp

from bootkit_amqp_consumer.frames import frame_handler

RECV_SIZE = 256 * 1024  # bytes asked of the socket at once
FRAME_END = 0xCE
# basic.ack as one method frame: type 1, channel, size 13; class 60, method 80,
# delivery tag, the multiple bit; frame end.
_ACK = Struct(">BHIHHQBB")
_HEADER = Struct(">BHI").unpack_from  # frame type, channel, payload size
_RETRY = (errno.EAGAIN, errno.EINTR)


class BufferedTransport(TCPTransport):  # type: ignore[misc]
    """A TCP transport that reads the socket in large chunks and parses frames out
    of its buffer."""

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._buffer = bytearray()

    def frame_ready(self) -> bool:
        """Whether a whole frame is buffered, so reading it makes no system call."""
        buffer = self._buffer
        return len(buffer) >= 8 and len(buffer) >= 8 + unpack_from(">I", buffer, 3)[0]

    def fill_nowait(self) -> bool:
        """Take what the socket holds now, without waiting; False if it held nothing."""
        sock = self.sock
        # With a Python-level timeout set, recv would wait for data despite MSG_DONTWAIT.
        if sock.gettimeout() is not None and not select.select([sock], [], [], 0)[0]:
            return False
        try:
            data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return False
        except OSError:
            self.connected = False
            raise
        self._take(data)
        return True

    def _fill(self) -> None:
        """Wait (within the socket's timeout) for more bytes."""
        initial = not self._buffer
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except OSError as exc:
                if exc.errno in _RETRY:
                    if initial and self.raise_on_initial_eintr:
                        raise TimeoutError() from None
                    continue
                if not isinstance(exc, TimeoutError):
                    self.connected = False
                raise
            self._take(data)
            return

    def _take(self, data: bytes) -> None:
        if not data:  # recv returns nothing only once the peer has closed
            self.connected = False
            raise OSError("Server unexpectedly closed connection")
        self._buffer += data

    def next_frame(self) -> tuple[int, int, bytes] | None:
        """The next frame in the buffer as (type, channel, payload); None when no
        whole frame is there (the socket is not read)."""
        buffer = self._buffer
        if len(buffer) < 7:
            return None
        frame_type, channel, size = _HEADER(buffer)
        end = 7 + size
        if len(buffer) <= end:
            return None
        if buffer[end] != FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {buffer[end]:#04x} while expecting 0xce")
        payload = bytes(buffer[7:end])
        del buffer[: end + 1]
        return frame_type, channel, payload

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        """The next frame as (type, channel, payload), waiting for it if need be."""
        while (frame := self.next_frame()) is None:
            self._fill()
        return frame


class AMQPConnection(pyamqp.Connection):
    """py-amqp's connection, on a `BufferedTransport` unless TLS is asked for, with
    `frames.frame_handler` reading its frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("frame_handler", frame_handler)
        super().__init__(*args, **kwargs)

    def Transport(  # noqa: N802 (py-amqp's name)
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> Any:
        if ssl:
            return super().Transport(
                host, connect_timeout, ssl, read_timeout, write_timeout, socket_settings, **kwargs
            )
        return BufferedTransport(
            host,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            socket_settings=socket_settings,
            **kwargs,
        )


class AMQPTransport(pyamqp.Transport):
    """kombu's ``amqp://`` transport, opening `AMQPConnection`s."""

    Connection = AMQPConnection


class WorkerConnection(Connection):
    """A kombu connection that opens `AMQPTransport` where kombu would open its own
    py-amqp transport, and `redis_transport.RedisTransport` for its Redis one; URLs,
    ``as_uri`` and ``clone`` stay kombu's."""

    def get_transport_cls(self) -> Any:
        transport = super().get_transport_cls()  # type: ignore[no-untyped-call]
        if transport is pyamqp.Transport:
            return AMQPTransport
        # By name: importing kombu's Redis module to compare would load redis-py.
        if f"{transport.__module__}.{transport.__qualname__}" == "kombu.transport.redis.Transport":
            from bootkit_amqp_consumer.redis_transport import RedisTransport

            return RedisTransport
        return transport


def ack_sender(channel: Any) -> Callable[[int, bool], None]:
    """How to send ``basic.ack`` on `channel`: `channel.basic_ack`, or on a
    `BufferedTransport` one prepacked frame written straight to the socket (the
    loop thread is the connection's only writer)."""
    connection = channel.connection
    transport = connection.transport
    if not isinstance(transport, BufferedTransport):
        return lambda tag, multiple: channel.basic_ack(tag, multiple=multiple)
    channel_id = channel.channel_id
    pack = _ACK.pack

    def send(tag: int, multiple: bool) -> None:
        transport.write(pack(1, channel_id, 13, 60, 80, tag, multiple, FRAME_END))
        connection.bytes_sent += 1  # as py-amqp counts frames sent, for heartbeats

    return send


def _buffered(connection: Connection) -> BufferedTransport | None:
    transport = getattr(getattr(connection, "connection", None), "transport", None)
    return transport if isinstance(transport, BufferedTransport) else None


def frame_ready(connection: Connection) -> bool:
    """Whether a whole frame already waits in `connection`'s buffer: a select on its
    socket would not see it (reads made while waiting for a reply can take it in)."""
    transport = _buffered(connection)
    return transport is not None and transport.frame_ready()


def waitables(connection: Connection) -> list[Any] | None:
    """What a loop waits on for `connection`'s broker: the AMQP socket, or the sockets
    kombu's Redis poller has a command out on; None for transports that can only be
    polled (memory, filesystem)."""
    sock = getattr(getattr(connection, "connection", None), "sock", None)
    if sock is not None:
        return [sock]
    cycle = _redis_poller(connection)
    if cycle is None:
        return None
    # A BRPOP goes out while the prefetch count leaves room, and is paused while it
    # does not, as when kombu waits itself.
    cycle.on_poll_start()
    return _redis_sockets(cycle)


def fetch(connection: Connection) -> int:
    """Take, in one round trip a channel, what `connection`'s Redis queues hold now,
    without waiting (`redis_transport.RedisChannel.fetch`); how many messages were
    handed over. 0 when the queues looked empty last time, and for other transports:
    the loop then waits for the broker."""
    cycle = _redis_poller(connection)
    if cycle is None:
        return 0
    return sum(channel.fetch() for channel in list(cycle._channels) if hasattr(channel, "fetch"))


class Upkeep:
    """What a loop does for `connection` between two waits: check the broker heartbeat;
    on Redis, sweep every `sweep_every` seconds (push back to their queues the messages
    left unacknowledged past the visibility timeout, by a worker that died), and every
    `interval` seconds what kombu's own event loop does on its timers (drop a BRPOP or
    pub/sub connection that stopped answering)."""

    def __init__(self, connection: Connection, interval: float = 10.0) -> None:
        self.connection = connection
        self.interval = interval
        # A tenth of the visibility timeout, 1 s to `interval`: a message a dead worker
        # held is back within the timeout and a tenth of it (kombu: ten `interval`s).
        timeout = float((connection.transport_options or {}).get("visibility_timeout", 3600.0))
        self.sweep_every = min(interval, max(1.0, timeout / 10))
        now = time.monotonic()
        self._due = now + interval
        self._sweep_due = now  # a worker that replaces a dead one looks at once

    def __call__(self) -> None:
        if self.connection.heartbeat:
            self.connection.heartbeat_check()
        cycle = _redis_poller(self.connection)
        if cycle is None:
            return
        now = time.monotonic()
        if now >= self._sweep_due:
            self._sweep_due = now + self.sweep_every
            _sweep(cycle)
        if now >= self._due:
            self._due = now + self.interval
            cycle.maybe_check_brpop_health()
            cycle.maybe_check_subclient_health()


def _sweep(cycle: Any) -> None:
    """Confirm the acks written so far (`redis_transport.Settler`), and push back what
    a dead worker left; a broken connection is left to the loop's own reads."""
    swept = False
    for channel in list(cycle._channels):
        with contextlib.suppress(*channel.connection_errors):
            if hasattr(channel, "settler"):
                channel.settler.settle()
            # The unacked keys are the database's, not a channel's: one channel sweeps.
            if channel.active_queues and not swept:
                swept = True
                channel.qos.restore_visible(num=channel.unacked_restore_limit, interval=1)


def _redis_poller(connection: Connection) -> Any:
    cycle = getattr(connection.transport, "cycle", None)
    return cycle if hasattr(cycle, "on_poll_start") else None


def _redis_sockets(cycle: Any) -> list[socket.socket]:
    """The sockets the poller waits on now: not paused and still open (a connection
    dropped inside kombu can leave its old fd mapped)."""
    fds = cycle.fds
    return [s for s in cycle._chan_to_sock.values() if s.fileno() in fds]


def drain(connection: Connection, readable: Collection[Any] = (), idle: bool = True) -> None:
    """Handle every frame or message that has arrived on `connection`, never waiting.

    After a wait on its `waitables`, pass what was `readable` and whether the wait was
    `idle`: kombu's Redis poller reads one reply a call, and does its upkeep (such as
    restoring unacknowledged messages) when it finds none, so it is called only for a
    socket with a reply or on an idle turn, as when kombu waits, not after every message.
    """
    transport = _buffered(connection)
    if transport is not None:
        transport.fill_nowait()
        # What py-amqp's blocking_read does for each frame, less its timeout set-up:
        # these frames are in the buffer already.
        on_frame = connection.connection.on_inbound_frame
        while (frame := transport.next_frame()) is not None:
            on_frame(frame)
        return
    cycle = _redis_poller(connection)
    if cycle is not None:
        socks = _redis_sockets(cycle)
        # A socket the wait left out (every slot busy) is looked at without waiting.
        if (
            idle
            or any(s in readable for s in socks)
            or (socks and select.select(socks, [], [], 0)[0])
        ):
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0)
        return
    while True:  # py-amqp over TLS may hold whole frames in its buffer, unseen by select
        try:
            connection.drain_events(timeout=0)
        except TimeoutError:
            return
