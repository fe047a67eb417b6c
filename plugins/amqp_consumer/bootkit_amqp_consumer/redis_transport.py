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
  only when the last take came back short.
- `Settler`: an ack is written on a connection of its own without waiting for the
  reply, as an AMQP ack is; the replies are read at the next ack. On the wire before
  its task starts, it needs no round trip of the loop's.
- One client for a channel's own commands: kombu builds a ``redis.Redis`` for each,
  and with redis-py 8 that copies some 170 response callbacks each time.
- A list item that is not a kombu message (not JSON, no delivery tag, a body not in
  its ``body_encoding``) is moved to the ``bootkit.unreadable`` list with a one-line error, where kombu's consumer
  would raise and take the worker down.

Imported only when the worker's broker is Redis, so an AMQP worker never loads
redis-py.
"""

from __future__ import annotations

import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import loads
from redis import Redis
from redis.exceptions import ResponseError

from bootkit import logger

UNREADABLE = "bootkit.unreadable"  # where list items that are not kombu messages go
FETCH_MAX = 64  # messages a take asks for when no prefetch count bounds it
OWED = 128  # replies to acks left unread before they are read (two an ack)

# KEYS: unacked_index, unacked, the parking list, then the queue lists in the order a
# BRPOP names them (priority first). ARGV: how many, the time to index them at.
# Each list is emptied before the next is read, which is what repeated BRPOPs do.
# The hash holds [message, exchange, routing_key] as kombu's QoS writes it, the
# message's own bytes kept as they came. Returns (list index, tag, item) triples;
# index 0 for an item parked as unreadable.
FETCH = """
local out, want = {}, tonumber(ARGV[1])
for i = 4, #KEYS do
  while #out < 3 * want do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local ok, m = pcall(cjson.decode, item)
    local props = ok and type(m) == 'table' and m.properties
    local tag = type(props) == 'table' and props.delivery_tag
    local info = type(props) == 'table' and props.delivery_info
    if (type(tag) == 'string' or type(tag) == 'number') and type(info) == 'table' then
      tag = tostring(tag)
      redis.call('ZADD', KEYS[1], ARGV[2], tag)
      redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info.exchange)
        .. ',' .. cjson.encode(info.routing_key) .. ']')
      out[#out + 1] = i - 3
      out[#out + 1] = tag
    else
      redis.call('LPUSH', KEYS[3], item)
      out[#out + 1] = 0
      out[#out + 1] = false
    end
    out[#out + 1] = item
  end
  if #out >= 3 * want then break end
end
return out
"""


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
    the replies later, `OWED` at a time (they arrived long before) or when the
    channel closes: no ack waits for Redis, and acks written together are not spaced
    by round trips."""

    def __init__(self, channel: RedisChannel) -> None:
        self.channel = channel
        # The consumer's loop acks; the lock keeps an ack from elsewhere from
        # interleaving its command or replies with the loop's.
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pool: Any = None
        self._pending = 0  # replies written for and not read yet
        prefix = channel.global_keyprefix
        self._hash = _bulk(prefix + channel.unacked_key)
        self._index = _bulk(prefix + channel.unacked_index_key)

    def send(self, tag: str) -> None:
        key = _bulk(tag)
        command = b"*3\r\n$4\r\nHDEL\r\n%s%s*3\r\n$4\r\nZREM\r\n%s%s" % (
            self._hash,
            key,
            self._index,
            key,
        )
        with self._lock:
            conn = self._connection()
            if self._pending >= OWED:
                self._read_locked(conn)
            try:
                conn.send_packed_command([command], check_health=False)
            except BaseException:
                self._drop_locked()
                raise
            self._pending += 2

    def settle(self) -> None:
        """Read every reply still owed: the acks written so far have been applied."""
        with self._lock:
            if self._conn is not None:
                self._read_locked(self._conn)

    def close(self) -> None:
        """Read what is owed and give the connection back (drop it if it failed)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                self._read_locked(conn)
            except Exception:
                conn.disconnect()
                return
            self._pool.release(conn)

    def _connection(self) -> Any:
        pool = self.channel.pool
        if self._conn is not None and self._pool is not pool:  # reconnected: a new pool
            self._drop_locked()
        if self._conn is None:
            self._conn, self._pool = pool.get_connection(), pool
        return self._conn

    def _read_locked(self, conn: Any) -> None:
        try:
            while self._pending:
                self._pending -= 1
                try:
                    conn.read_response(disable_decoding=True, disconnect_on_error=True)
                except ResponseError as exc:  # e.g. the keys hold another type: say so
                    logger().error("ack_failed", error=str(exc))
        except BaseException:
            self._drop_locked()
            raise

    def _drop_locked(self) -> None:
        conn, self._conn, self._pending = self._conn, None, 0
        if conn is not None:
            conn.disconnect()


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel with `fetch`, the `Settler` and one shared client."""

    QoS = RedisQoS
    _shared_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: set[str] = set()  # tags a take recorded as unacked, not delivered yet
        self._more = True  # the last take was full or a BRPOP brought one: try a take
        self._fetching = False  # a loop calls `fetch`: no BRPOP while a take may find more
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

    def fetch(self) -> int:
        """Take what the consumed queues hold now, up to the prefetch count's room, in
        one round trip; how many were taken. Nothing is taken while a BRPOP is out (it
        may bring one more) or after a take came back short (the queues were empty:
        the loop waits with a BRPOP instead)."""
        self._fetching = True
        queues = self.active_queues
        if not self._more or self._in_poll or not queues or not self.qos.can_consume():
            return 0
        room = min(self.qos.can_consume_max_estimate() or FETCH_MAX, FETCH_MAX)
        order = self._queue_cycle.consume(len(queues))
        prefix = self.global_keyprefix
        dests = [queue for pri in self.priority_steps for queue in order]
        keys = [prefix + self.unacked_index_key, prefix + self.unacked_key, prefix + UNREADABLE]
        keys += [
            prefix + self._q_for_pri(queue, pri)  # type: ignore[no-untyped-call]
            for pri in self.priority_steps
            for queue in order
        ]
        reply = self._script()(keys=keys, args=[room, time.time()])
        taken = len(reply) // 3
        self._more = taken == room
        triples = [reply[at : at + 3] for at in range(0, len(reply), 3)]
        for done, (index, tag, item) in enumerate(triples):
            try:
                if index:
                    self._queue_cycle.rotate(dests[index - 1])
                    self._take(dests[index - 1], item, tag.decode())
                else:
                    self._unreadable(dests, item, "not a kombu message", parked=True)
            except BaseException:  # the rest are recorded but were not handed over
                left = [t.decode() for i, t, _ in triples[done:] if i]
                self._put_back([t for t in left if t not in self.qos._delivered])
                raise
        return taken

    def _put_back(self, tags: list[str]) -> None:
        """Return recorded messages to the consuming end of their queues, first
        taken first again."""
        for tag in reversed(tags):
            self.qos.restore_by_tag(tag)

    def _script(self) -> Any:
        if self._fetch_client is None or self._fetch_client.connection_pool is not self.pool:
            # Keys are prefixed here, so the script goes through a client that does not.
            self._fetch_client = Redis(connection_pool=self.pool)
            self._fetch_script = self._fetch_client.register_script(FETCH)
        return self._fetch_script

    def _take(self, dest: str, item: bytes, tag: str | None) -> None:
        """Hand one message to its queue's consumer; `tag`: recorded by a take."""
        try:
            payload = _message(item)
        except Exception as exc:
            if tag is not None:  # recorded, but Python cannot read it: take it back
                self.qos._remove_from_indices(tag).execute()
            self._unreadable([dest], item, f"{type(exc).__name__}: {exc}", parked=False)
            return
        if tag is not None:
            self.recorded.add(tag)
        try:
            self.connection._deliver(payload, dest)
        except _UndecodableBodyError as exc:  # kombu could not make it a message: not delivered
            if tag is not None:
                self.qos._remove_from_indices(tag).execute()
            self._unreadable([dest], item, str(exc), parked=False)
        finally:
            self.recorded.discard(tag)

    def decode_body(self, body: Any, encoding: str | None = None) -> Any:
        try:
            return super().decode_body(body, encoding)  # type: ignore[no-untyped-call]
        except Exception as exc:  # an unknown body_encoding, or bad base64
            raise _UndecodableBodyError(
                f"body_encoding {encoding!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _unreadable(self, dests: list[str], item: bytes, why: str, *, parked: bool) -> None:
        if not parked:
            with self.conn_or_acquire() as client:
                client.lpush(UNREADABLE, item)
        logger().error(
            "message_rejected",
            reason="unreadable",
            detail=why,
            queues=sorted(set(dests)),
            parked_in=UNREADABLE,
            size=len(item),
        )

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._fetching and self._more:
            return  # the loop's next `fetch` takes what is there; a BRPOP would race it
        super()._brpop_start(timeout)  # type: ignore[no-untyped-call]

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's read of a BRPOP reply, with its message handed over by `_take`."""
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll reconnects
                raise
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]
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
    """A list item as kombu's message dict; raises unless it has what kombu's channel
    reads of it (the delivery tag, and the exchange and routing key its unacked
    record and restore need)."""
    payload = loads(item)
    props = payload["properties"]
    info = props["delivery_info"]
    missing = [key for key in ("exchange", "routing_key") if key not in info]
    if "delivery_tag" not in props or missing:
        raise KeyError(", ".join(["delivery_tag"] if "delivery_tag" not in props else missing))
    return payload  # type: ignore[no-any-return]


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)
