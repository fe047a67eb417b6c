"""kombu's Redis transport with the worker's delivery path.

kombu keeps Redis's messages in lists (LPUSH to publish, BRPOP to consume) and
emulates acknowledgements: a delivered message is recorded in the ``unacked`` hash
and the ``unacked_index`` sorted set until it is acked, and whatever stays there past
the visibility timeout is pushed back. The keys, the message format and that restore
stay kombu's, so Celery's workers and clients share the queues; what changes is how
the worker takes and settles messages, which cost four round trips a task:

- `RedisChannel.fetch`: while the queues hold messages, one script call takes as many
  as the prefetch count leaves room for and records each as unacked in the same
  atomic step. kombu pops one message a BRPOP and records it with a second round
  trip, and a worker killed between the two has lost it. The loop BRPOPs (waits)
  only when the last take came back short. What the script cannot record exactly as
  kombu would (a numeric delivery tag, JSON its cjson does not read) is handed over
  unrecorded, and recorded by kombu's QoS as after a BRPOP. Queues consumed without
  acks are left to kombu's BRPOP.
- `Settler`: an ack is written on a connection of its own without waiting for the
  reply, as an AMQP ack is: on the wire before its task starts, it needs no round
  trip of the loop's. Replies are read in bulk later; acks whose replies never came
  are written again on a new connection.
- One client for a channel's own commands: kombu builds a ``redis.Redis`` for each,
  and with redis-py 8 that copies some 170 response callbacks each time.
- A list item that is not a kombu message (not JSON, no delivery tag, a body not in
  its ``body_encoding``) is moved to the ``bootkit.unreadable`` list with a one-line
  error, where kombu's consumer would raise and take the worker down.

Imported only when the worker's broker is Redis, so an AMQP worker never loads
redis-py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import loads
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bootkit import logger

# What drops the ack connection: it failed, or Redis refused a command on it.
FAILED = (RedisConnectionError, RedisTimeoutError, OSError, ResponseError)
REPLY_TIMEOUT = 10.0  # seconds a reply owed on the ack connection may take
STOP_WAIT = 1.0  # seconds a cold stop waits for a take under way to hand back the rest
ACKS_CLIENT = "bootkit-acks"  # the ack connection's name, as CLIENT LIST shows it
UNREADABLE = "bootkit.unreadable"  # where list items that are not kombu messages go
FETCH_MAX = 64  # messages a take asks for when no prefetch count bounds it
OWED = 64  # acks whose replies are left unread before they are read
IDLE = 5.0  # seconds unused after which the ack connection is checked before a write

# KEYS: unacked_index, unacked, then the queue lists in the order a BRPOP names them
# (priority first). ARGV: how many, the time to index them at. Within a take the
# lists are read in that order, each to its end or the count; between takes the
# channel's queue cycle turns, as it does after a BRPOP. A message whose tag and
# exchange and routing key are strings is recorded as kombu's QoS records it, in
# its unacked hash ([message, exchange, routing_key], the message's bytes as they
# came) and index. Anything else (a numeric tag, JSON cjson does not read, no
# kombu message at all) is handed to Python unrecorded, as a BRPOP would hand it.
# Nothing after the RPOP can raise. Returns (list index, tag or false, item) triples.
FETCH = """
local out, want = {}, tonumber(ARGV[1])
for i = 3, #KEYS do
  while #out < 3 * want do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local ok, m = pcall(cjson.decode, item)
    local props = ok and type(m) == 'table' and m.properties
    local tag = type(props) == 'table' and props.delivery_tag
    local info = type(props) == 'table' and props.delivery_info
    if type(tag) == 'string' and type(info) == 'table'
        and type(info.exchange) == 'string' and type(info.routing_key) == 'string' then
      redis.call('ZADD', KEYS[1], ARGV[2], tag)
      redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info.exchange)
        .. ',' .. cjson.encode(info.routing_key) .. ']')
    else
      tag = false
    end
    out[#out + 1] = i - 2
    out[#out + 1] = tag
    out[#out + 1] = item
  end
  if #out >= 3 * want then break end
end
return out
"""


Taken = tuple[str, str, bytes | None, bytes]  # (list key, queue, tag a take recorded, item)


class RedisQoS(kombu_redis.QoS):
    """kombu's ack emulation, told which deliveries a take recorded already, and
    settling acks through the channel's `Settler`."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel.recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # the local bookkeeping only
        else:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        self.channel.settler.send(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)


class Settler:
    """Writes each ack (HDEL and ZREM of its tag) on a connection of its own and reads
    the replies later, `OWED` at a time (they arrived long before), at each sweep of
    the loop's upkeep and when the channel closes: no ack waits for Redis, and acks
    written together are not spaced by round trips.

    It holds to one rule: the connection, when there is one, carries exactly the
    tags in `_unread`, written in that order, two replies owed for each. Any failure
    (a write or read that fails or times out, an error reply, a PING after `idle`
    seconds unused that fails) drops the connection; the next one starts by writing
    every unread tag again, since a write into a socket the server has closed can
    succeed and be lost, and settling a tag twice is harmless. When Redis cannot be
    reached twice running the error goes up, and the consumer reconnects."""

    def __init__(self, channel: RedisChannel) -> None:
        self.channel = channel
        # The consumer's loop acks; the lock keeps an ack from elsewhere from
        # interleaving its command or replies with the loop's.
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pool: Any = None
        self._unread: deque[str] = deque()  # tags written whose two replies are unread
        self._used = 0.0  # monotonic time of the last write
        self.idle = IDLE  # seconds unused before the connection is looked at first
        prefix = channel.global_keyprefix
        self._hash = _bulk(prefix + channel.unacked_key)
        self._index = _bulk(prefix + channel.unacked_index_key)

    def send(self, tag: Any) -> None:
        tag = str(tag)  # as redis-py writes a numeric tag
        command = self._command(tag)
        with self._lock:
            self._retrying(lambda conn: self._write_locked(conn, tag, command))

    def settle(self) -> None:
        """Read every reply still owed: the acks written so far have been applied."""
        with self._lock:
            if self._unread:
                self._retrying(self._read_locked)

    def close(self) -> None:
        """Settle what is owed and give the connection back; a failure is logged."""
        try:
            self.settle()
        except Exception as exc:  # Redis is gone: those acks come back after the timeout
            logger().warning("ack_unconfirmed", acks=len(self._unread), error=str(exc))
        with self._lock:
            self._drop_locked()

    def _retrying(self, work: Callable[[Any], None]) -> None:
        for attempt in (1, 2):
            try:
                work(self._connection())
                return
            except FAILED:
                self._drop_locked()
                if attempt == 2:
                    raise

    def _write_locked(self, conn: Any, tag: str, command: bytes) -> None:
        if len(self._unread) >= OWED:
            self._read_locked(conn)
        conn.send_packed_command([command], check_health=False)
        self._unread.append(tag)
        self._used = time.monotonic()

    def _command(self, tag: str) -> bytes:
        key = _bulk(tag)
        return b"*3\r\n$4\r\nHDEL\r\n%s%s*3\r\n$4\r\nZREM\r\n%s%s" % (
            self._hash,
            key,
            self._index,
            key,
        )

    def _connection(self) -> Any:
        pool = self.channel.pool
        if self._conn is not None and self._pool is not pool:  # reconnected: a new pool
            self._drop_locked()
        if self._conn is None:
            conn = pool.get_connection()
            self._conn, self._pool = conn, pool
            conn.send_command("CLIENT", "SETNAME", ACKS_CLIENT, check_health=False)
            with contextlib.suppress(ResponseError):  # a name is a courtesy (ACLs may refuse)
                conn.read_response(timeout=REPLY_TIMEOUT)
            if self._unread:  # what the last connection may have lost
                conn.send_packed_command(
                    [b"".join(map(self._command, self._unread))], check_health=False
                )
            self._used = time.monotonic()
        elif time.monotonic() - self._used > self.idle:
            # Unused a while: a server or proxy may have closed it. Look first.
            self._read_locked(self._conn)
            self._conn.send_command("PING", check_health=False)
            self._conn.read_response(timeout=REPLY_TIMEOUT)
            self._used = time.monotonic()
        return self._conn

    def _read_locked(self, conn: Any) -> None:
        while self._unread:
            errors = []
            for _ in (1, 2):  # both of a pair, so an error leaves nothing half read
                try:
                    conn.read_response(disable_decoding=True, timeout=REPLY_TIMEOUT)
                except ResponseError as exc:
                    errors.append(exc)
            if errors:  # READONLY after a failover, MISCONF, ...: not applied
                raise errors[0]
            self._unread.popleft()

    def _drop_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel with `fetch`, the `Settler` and one shared client."""

    QoS = RedisQoS
    _shared_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: set[str] = set()  # tags a take recorded as unacked, not delivered yet
        self._more = True  # the last take was full or a BRPOP brought one: try a take
        self._fetching = False  # a loop calls `fetch`: no BRPOP while a take may find more
        self._stopped = False  # `stop_taking`: neither takes nor BRPOPs any more
        self._no_ack: set[str] = set()  # queues consumed without acks: never taken
        self._taking = threading.Lock()  # held by a take, so `stop_taking` can wait it out
        self._fetch_client: Any = None
        self._fetch_script: Any = None
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.settler = Settler(self)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the poller's own client (BRPOP, LISTEN): kombu caches it
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self._shared_client
        # The pool is replaced when the channel reconnects: so is the client.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client

    def basic_cancel(self, consumer_tag: str) -> Any:
        self._no_ack.discard(self._tag_to_queue.get(consumer_tag))
        return super().basic_cancel(consumer_tag)  # type: ignore[no-untyped-call]

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:  # nothing would settle what a take records
            self._no_ack.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[no-untyped-call]

    def stop_taking(self) -> None:
        """Take nothing more (a cold shutdown hands back what it holds), and settle
        the acks written so far."""
        self._stopped = True
        # A take under way hands back what it has not handed over: let it (briefly:
        # with -P solo it may be running a task).
        if self._taking.acquire(timeout=STOP_WAIT):
            self._taking.release()
        with contextlib.suppress(Exception):  # what is not settled comes back later
            self.settler.settle()

    def fetch(self) -> int:
        """Take what the consumed queues hold now, up to the prefetch count's room, in
        one round trip; how many were taken. Nothing is taken while a BRPOP is out (it
        may bring one more) or after a take came back short (the queues were empty:
        the loop waits with a BRPOP instead)."""
        self._fetching = True
        queues = self.active_queues
        if not (self._more and queues and self._takes(queues)) or self._in_poll:
            return 0
        if not self.qos.can_consume():  # no room: kombu sends no BRPOP either
            return 0
        with self._taking:
            return 0 if self._stopped else self._take_some(queues)

    def _take_some(self, queues: Any) -> int:
        room = min(self.qos.can_consume_max_estimate() or FETCH_MAX, FETCH_MAX)
        order = self._queue_cycle.consume(len(queues))
        lists = [  # (list key, queue), in the order a BRPOP names them
            (self._q_for_pri(queue, pri), queue)  # type: ignore[no-untyped-call]
            for pri in self.priority_steps
            for queue in order
        ]
        keys = [self.unacked_index_key, self.unacked_key, *(key for key, _ in lists)]
        reply = self._script()(
            keys=[self.global_keyprefix + key for key in keys], args=[room, time.time()]
        )
        taken: list[Taken] = [
            (*lists[index - 1], tag, item)
            for index, tag, item in zip(reply[::3], reply[1::3], reply[2::3], strict=True)
        ]
        self._more = len(taken) == room
        for done, (_, dest, tag, item) in enumerate(taken):
            if self._stopped:  # a cold stop: the rest go back untouched
                self._put_back(taken[done:])
                break
            try:
                self._queue_cycle.rotate(dest)
                self._take(dest, item, tag)
            except BaseException as exc:
                handed = self._handed(tag, item)
                refused = isinstance(exc, Exception) and not isinstance(exc, RedisError | OSError)
                if refused and not handed:  # by kombu, before any consumer saw it
                    self._unreadable(dest, item, tag, f"{type(exc).__name__}: {exc}")
                    continue
                # Handed over, Redis failed, or the loop is stopping: the rest go back.
                self._put_back(taken[done + 1 :] if handed else taken[done:])
                raise
        return len(taken)

    def _takes(self, queues: Any) -> bool:
        """Whether the loop's `fetch` takes for this channel (not for queues consumed
        without acks, whose records nothing would settle, nor once stopped)."""
        return self._fetching and not self._stopped and self._no_ack.isdisjoint(queues)

    def _handed(self, tag: bytes | None, item: bytes) -> bool:
        """Whether the message reached kombu's QoS (it restores it at close)."""
        own: Any = None if tag is None else tag.decode("utf-8", "replace")
        if own is None:  # unrecorded: its tag is the message's own, if it has one
            with contextlib.suppress(Exception):
                own = _message(item)["properties"]["delivery_tag"]
        return own is not None and own in self.qos._delivered

    def _put_back(self, entries: list[Taken]) -> None:
        """Push taken messages back to the consuming end of their lists, the first
        taken last (so it comes first again), and drop their records, in one step."""
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()
            for key, _, tag, item in reversed(entries):
                pipe.rpush(key, item)  # a prefixed client adds the prefix
                if tag is not None:
                    self.qos._remove_from_indices(tag, pipe)
            pipe.execute()

    def _script(self) -> Any:
        if self._fetch_client is None or self._fetch_client.connection_pool is not self.pool:
            # Keys are prefixed here, so the script goes through a client that does not.
            self._fetch_client = Redis(connection_pool=self.pool)
            self._fetch_script = self._fetch_client.register_script(FETCH)
        return self._fetch_script

    def _take(self, dest: str, item: bytes, recorded: bytes | None) -> None:
        """Hand one message to its queue's consumer; `recorded`: its tag, if a take
        recorded it."""
        try:
            tag = None if recorded is None else recorded.decode()
            payload = _message(item)
        except Exception as exc:  # the recorded tag as it came: Redis takes bytes
            self._unreadable(dest, item, recorded, f"{type(exc).__name__}: {exc}")
            return
        if tag is not None:
            self.recorded.add(tag)
        try:
            self.connection._deliver(payload, dest)
        except _UndecodableBodyError as exc:  # kombu could not make it a message
            self._unreadable(dest, item, tag, str(exc))
        finally:
            self.recorded.discard(tag)

    def decode_body(self, body: Any, encoding: str | None = None) -> Any:
        try:
            return super().decode_body(body, encoding)  # type: ignore[no-untyped-call]
        except Exception as exc:  # an unknown body_encoding, or bad base64
            raise _UndecodableBodyError(
                f"body_encoding {encoding!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _unreadable(self, dest: str, item: bytes, tag: str | bytes | None, why: str) -> None:
        """Park `item` in `UNREADABLE`, and drop its record (if a take made one) in the
        same step, so it is never in neither."""
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.lpush(UNREADABLE, item)
            if tag is not None:
                self.qos._remove_from_indices(tag, pipe)
            pipe.execute()
        logger().error(
            "message_rejected",
            reason="unreadable",
            detail=why[:300],
            queue=dest,
            parked_in=UNREADABLE,
            size=len(item),
        )

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._stopped:
            return
        if self._more and self._takes(self.active_queues):
            return  # the loop's next `fetch` takes what is there; a BRPOP would race it
        super()._brpop_start(timeout)  # type: ignore[no-untyped-call]

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's read of a BRPOP reply, with its message handed over by `_take`."""
        if not self._in_poll:
            # Readable with no BRPOP out (`_brpop_start` held it back): the server
            # closed the connection or pushed something. Start it afresh.
            self.client.connection.disconnect()
            raise Empty()
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll reconnects
                raise
        finally:
            self._in_poll = None  # type: ignore[assignment]
            reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu 5.7's re-auth
            if reauth is not None:
                reauth()
        if not reply:
            raise Empty()
        key, item = reply
        dest = key.decode().rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(dest)
        self._more = True
        self._take(dest, item, None)
        return True

    def close(self) -> None:
        # The acks written must be applied before kombu restores what is unacked.
        try:
            self.settler.close()
        finally:
            super().close()  # type: ignore[no-untyped-call]


class RedisTransport(kombu_redis.Transport):
    """kombu's ``redis://`` transport, with `RedisChannel`."""

    Channel = RedisChannel


class _UndecodableBodyError(Exception):
    """kombu's message envelope names a body encoding its body is not in."""


def _message(item: bytes) -> dict[str, Any]:
    """A list item as kombu's message dict; raises unless kombu's channel and QoS can
    take it: a delivery tag Redis can store, and an exchange and routing key (its
    unacked record and restore need them)."""
    payload = loads(item)
    props = payload["properties"]
    info = props["delivery_info"]
    tag = props["delivery_tag"]
    if not all(isinstance(part, dict) for part in (payload, props, info)):
        raise TypeError("the message, its properties and delivery_info must be objects")
    if isinstance(tag, bool) or not isinstance(tag, str | int | float):
        raise TypeError(f"delivery_tag {tag!r} is not a string or a number")
    if isinstance(tag, str):
        tag.encode()  # a lone surrogate cannot be a Redis key
    if not isinstance(payload.get("headers", {}), dict | None):
        raise TypeError("headers must be an object")
    missing = [key for key in ("exchange", "routing_key") if key not in info]
    if missing:
        raise KeyError(", ".join(missing))
    return payload  # type: ignore[no-any-return]


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)
