"""`redis_transport`: the worker's takes and acks on a real Redis, read back with
kombu's own transport and the keys it keeps (the queue lists, ``unacked`` and
``unacked_index``), so a Celery worker on the same queues sees what it expects."""

from __future__ import annotations

import json
import select
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer

from bootkit_amqp_consumer.redis_transport import ACKS_CLIENT, UNREADABLE, RedisChannel
from bootkit_amqp_consumer.transport import Upkeep, WorkerConnection, drain, fetch, waitables
from e2e_support import start_refused

REDIS_URL = "redis://127.0.0.1:6379/14"
TIMEOUT = 4.0  # every wait below gives up after this long
SHORT = 0.2


@pytest.fixture
def db() -> Iterator[Any]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def name(db: Any) -> Iterator[str]:
    """A queue name of the test's own; its lists are deleted afterwards."""
    queue = f"test-redis-{uuid.uuid4().hex[:8]}"
    yield queue
    if keys := db.keys(f"{queue}*"):
        db.delete(*keys)


def publish(
    queue: str, bodies: list[str], priorities: list[int] | None = None, **options: Any
) -> list[bytes]:
    """Publish with kombu's own transport; the list items it wrote, oldest first."""
    with closing(Connection(REDIS_URL, transport_options=options)) as conn:
        producer = Producer(conn.channel())
        for at, body in enumerate(bodies):
            extra = {} if priorities is None else {"priority": priorities[at]}
            producer.publish(body, exchange="", routing_key=queue, serializer="json", **extra)
    client: Any
    with closing(redis.Redis.from_url(REDIS_URL)) as client:
        items: list[bytes] = []
        prefix = options.get("global_keyprefix", "")
        for key in sorted(client.keys(f"{prefix}{queue}*")):
            items += reversed(client.lrange(key, 0, -1))  # LPUSHed: the oldest is last
        return items


class Taker:
    """A worker connection consuming `queue` the way the consumer's loop does."""

    def __init__(self, queue: str, prefetch: int, **options: Any) -> None:
        self.conn: Any = WorkerConnection(REDIS_URL, connect_timeout=2, transport_options=options)
        self.channel: RedisChannel = self.conn.channel()
        self.channel.basic_qos(0, prefetch, False)
        self.got: list[Any] = []
        self.consumer = Consumer(
            self.channel, [Queue(queue, channel=self.channel)], on_message=self.got.append
        )
        self.consumer.consume()

    def fetch(self) -> int:
        return fetch(self.conn)

    def close(self) -> None:
        self.channel.close()
        self.conn.release()


def wait_and_drain(conn: Any) -> None:
    """One wait of the consumer's loop on the broker's sockets, then a drain."""
    readable, _, _ = select.select(waitables(conn) or [], [], [], SHORT)
    drain(conn, readable, idle=not readable)


def kill_ack_connection(db: Any) -> None:
    """Close, from the server's side, the ack connection of the test's database."""
    (acks,) = [c for c in db.client_list() if c["name"] == ACKS_CLIENT and c["db"] == "14"]
    db.client_kill_filter(_id=acks["id"])


def unacked(db: Any, tags: list[str]) -> list[Any]:
    """The unacked records of `tags` (None for a tag with none), and whether each is indexed."""
    records = db.hmget("unacked", tags)
    return [
        (
            None if record is None else json.loads(record),
            db.zscore("unacked_index", tag) is not None,
        )
        for tag, record in zip(tags, records, strict=True)
    ]


def test_a_take_hands_over_what_the_prefetch_count_allows_recorded_as_kombu_records_it(
    db: Any, name: str
) -> None:
    items = publish(name, [f"m{i}" for i in range(5)])
    taker = Taker(name, prefetch=3)
    try:
        assert taker.fetch() == 3
        assert [m.body for m in taker.got] == [b'"m0"', b'"m1"', b'"m2"']
        assert db.llen(name) == 2
        tags = [m.delivery_tag for m in taker.got]
        # Byte for byte the message kombu wrote, then its exchange and routing key:
        # the record kombu's QoS writes and its restore reads.
        assert unacked(db, tags) == [([json.loads(item), "", name], True) for item in items[:3]]
        assert taker.fetch() == 0  # no room: nothing taken
        for message in taker.got:
            message.ack()
        # On the wire at once: Redis applies them while no reply has been read.
        deadline = time.monotonic() + TIMEOUT
        while unacked(db, tags) != [(None, False)] * 3:
            assert time.monotonic() < deadline, unacked(db, tags)
        taker.channel.settler.settle()
        assert taker.fetch() == 2  # room again: the rest, and the queue looked empty
        assert taker.fetch() == 0
    finally:
        taker.close()


def test_takes_follow_the_order_kombus_brpop_follows(db: Any, name: str) -> None:
    priorities = [0, 9, 3, 9, 6, 0, 3]
    bodies = [f"p{p}-{i}" for i, p in enumerate(priorities)]
    publish(f"{name}-kombu", bodies, priorities)
    publish(name, bodies, priorities)
    with closing(Connection(REDIS_URL)) as conn:
        seen: list[Any] = []
        channel = conn.channel()
        consumer = Consumer(channel, [Queue(f"{name}-kombu", channel=channel)])

        def on_message(body: Any, message: Any) -> None:
            seen.append(body)
            message.ack()

        consumer.register_callback(on_message)
        consumer.consume()
        while len(seen) < len(bodies):
            conn.drain_events(timeout=TIMEOUT)
    taker = Taker(name, prefetch=len(bodies) + 1)
    try:
        assert taker.fetch() == len(bodies)
        assert [json.loads(m.body) for m in taker.got] == seen
    finally:
        taker.close()


def test_what_a_taker_leaves_unacked_is_restored_by_kombus_visibility_timeout(
    db: Any, name: str
) -> None:
    items = publish(name, ["a", "b"])
    taker = Taker(name, prefetch=2)
    try:
        assert taker.fetch() == 2
        tags = [m.delivery_tag for m in taker.got]
    finally:
        # As a worker killed now: nothing is restored on the way out.
        taker.channel.qos._delivered.clear()
        taker.close()
    assert db.llen(name) == 0
    with closing(Connection(REDIS_URL, transport_options={"visibility_timeout": 0})) as conn:
        conn.channel().qos.restore_visible(num=100)
    assert unacked(db, tags) == [(None, False)] * 2
    # Back in the queue as they were published (kombu restores in its own order).
    back = {json.loads(item)["properties"]["delivery_tag"]: item for item in db.lrange(name, 0, -1)}
    published = [json.loads(item) for item in items]
    assert (
        sorted(back) == sorted(tags) == sorted(p["properties"]["delivery_tag"] for p in published)
    )
    for message in published:
        restored = json.loads(back[message["properties"]["delivery_tag"]])
        assert restored["body"] == message["body"]
        assert restored["headers"] == {**message["headers"], "redelivered": True}


def test_items_that_are_not_kombu_messages_are_parked_and_the_rest_go_on(
    db: Any, name: str
) -> None:
    marker = uuid.uuid4().hex
    (good,) = publish(name, ["first"])
    envelope = json.loads(good)
    bad = [f"not json {marker}", json.dumps({"properties": {}, "m": marker})]
    for encoding, body in (("base64", "abc"), ("rot99", "x")):  # bad padding; no such codec
        props = {**envelope["properties"], "delivery_tag": f"{marker}-{encoding}"}
        props["body_encoding"] = encoding
        bad.append(json.dumps({**envelope, "body": body, "properties": props}))
    db.lpush(name, *bad)
    publish(name, ["last"])
    taker = Taker(name, prefetch=10)
    try:
        assert taker.fetch() == 2 + len(bad)  # every item taken off the list...
        assert [m.body for m in taker.got] == [b'"first"', b'"last"']  # ...two of them messages
        parked = [item for item in db.lrange(UNREADABLE, 0, -1) if marker.encode() in item]
        assert sorted(parked) == sorted(item.encode() for item in bad)
        tags = [f"{marker}-base64", f"{marker}-rot99"]
        assert unacked(db, tags) == [(None, False)] * 2  # recorded, then taken back
    finally:
        taker.close()
        for item in parked:
            db.lrem(UNREADABLE, 0, item)


def test_a_brpop_brings_an_unreadable_item_to_the_same_end(db: Any, name: str) -> None:
    marker = uuid.uuid4().hex
    taker = Taker(name, prefetch=4)
    try:
        assert taker.fetch() == 0  # the queue is empty: the loop waits with a BRPOP now
        assert waitables(taker.conn)
        db.lpush(name, f"garbage {marker}")
        publish(name, ["after"])
        deadline = time.monotonic() + TIMEOUT
        while not taker.got:  # the consumer's loop: take, else wait on the BRPOP and drain
            assert time.monotonic() < deadline
            if not taker.fetch():
                wait_and_drain(taker.conn)
        assert [m.body for m in taker.got] == [b'"after"']
        assert db.lrem(UNREADABLE, 0, f"garbage {marker}") == 1
    finally:
        taker.close()


def test_the_queues_connection_closing_puts_every_unacked_message_back(db: Any, name: str) -> None:
    publish(name, ["a", "b", "c"])
    taker = Taker(name, prefetch=3)
    try:
        assert taker.fetch() == 3
        taker.got[0].ack()  # settled; the other two are restored at close, as kombu does
        tags = [m.delivery_tag for m in taker.got]
    finally:
        taker.close()
    assert unacked(db, tags) == [(None, False)] * 3
    back = [json.loads(item)["properties"]["delivery_tag"] for item in db.lrange(name, 0, -1)]
    assert sorted(back) == sorted(tags[1:])


def test_with_a_global_key_prefix_every_key_a_take_and_an_ack_touch_is_prefixed(
    db: Any, name: str
) -> None:
    prefix = f"{name}:"
    items = publish(name, ["x"], global_keyprefix=prefix)
    assert db.llen(prefix + name) == 1
    taker = Taker(name, prefetch=2, global_keyprefix=prefix)
    try:
        assert taker.fetch() == 1
        (message,) = taker.got
        tag = message.delivery_tag
        assert json.loads(db.hget(prefix + "unacked", tag)) == [json.loads(items[0]), "", name]
        assert db.zscore(prefix + "unacked_index", tag) is not None
        assert unacked(db, [tag]) == [(None, False)]  # nothing under the bare keys
        message.ack()
        taker.channel.settler.settle()
        assert db.hget(prefix + "unacked", tag) is None
        assert db.zscore(prefix + "unacked_index", tag) is None
    finally:
        taker.close()  # the fixture deletes the prefixed keys: they begin with `name`


def test_the_upkeep_of_a_live_worker_sweeps_back_what_a_dead_one_left(db: Any, name: str) -> None:
    publish(name, ["held"])
    dead = Taker(name, prefetch=1)
    try:
        assert dead.fetch() == 1
        (message,) = dead.got
    finally:
        dead.channel.qos._delivered.clear()  # killed: nothing is restored on the way out
        dead.close()
    assert db.llen(name) == 0
    live = Taker(name, prefetch=1, visibility_timeout=0.5)
    try:
        upkeep = Upkeep(live.conn)
        assert upkeep.sweep_every == 1.0  # a tenth of the timeout, never under a second
        assert Upkeep(WorkerConnection(REDIS_URL)).sweep_every == 10.0  # kombu's 3600 s
        deadline = time.monotonic() + 0.5 + 2 * upkeep.sweep_every + TIMEOUT
        while not db.llen(name):  # the consumer's loop calls it after each wait
            assert time.monotonic() < deadline
            upkeep()
        (back,) = db.lrange(name, 0, -1)
        assert json.loads(back)["properties"]["delivery_tag"] == message.delivery_tag
        assert unacked(db, [message.delivery_tag]) == [(None, False)]
    finally:
        live.close()


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_visibility_timeout_must_be_above_zero(tmp_path: Path, value: str) -> None:
    error = start_refused(tmp_path, "-b", REDIS_URL, "--visibility-timeout", value)
    assert f"--visibility-timeout must be above 0, got {float(value)}" in error


def envelope_like(db: Any, name: str, body: str, **props: Any) -> dict[str, Any]:
    """A kombu message for `name` as kombu writes it, its properties changed by `props`."""
    (item,) = publish(name, [body])
    db.delete(name)
    message: dict[str, Any] = json.loads(item)
    message["properties"] = {**message["properties"], **props}
    return message


def test_what_the_script_does_not_record_is_handed_over_as_a_brpop_hands_it(
    db: Any, name: str
) -> None:
    numeric = envelope_like(db, name, "numeric tag", delivery_tag=12345678901234567)
    odd = envelope_like(db, name, "odd key")  # exchange and routing key as Python has them
    odd["properties"]["delivery_info"]["routing_key"] = 1e400  # cjson cannot write it back
    surrogate = envelope_like(db, name, "lone surrogate")  # Python reads it, cjson does not
    surrogate["headers"] = {"note": "\ud800"}
    db.lpush(name, json.dumps(numeric), json.dumps(odd), json.dumps(surrogate))
    taker = Taker(name, prefetch=5)
    try:
        assert taker.fetch() == 3
        assert [json.loads(m.body) for m in taker.got] == [
            "numeric tag",
            "odd key",
            "lone surrogate",
        ]
        tags = [str(m.delivery_tag) for m in taker.got]
        assert all(record is not None for record, _ in unacked(db, tags))  # kombu's record
        for message in taker.got:
            message.ack()
        taker.channel.settler.settle()
        assert unacked(db, tags) == [(None, False)] * 3
    finally:
        taker.close()


def test_a_consumer_that_raises_mid_take_leaves_the_rest_where_they_were(
    db: Any, name: str
) -> None:
    items = publish(name, ["a", "b", "c"])
    taker = Taker(name, prefetch=3)

    def fail_on_b(message: Any) -> None:
        if message.body == b'"b"':
            raise RuntimeError("the consumer failed")
        taker.got.append(message)

    taker.consumer.on_message = fail_on_b
    try:
        with pytest.raises(RuntimeError):
            taker.fetch()
        assert [m.body for m in taker.got] == [b'"a"']
        tags = [json.loads(item)["properties"]["delivery_tag"] for item in items]
        # c never reached the consumer: back as it was published, its record dropped.
        assert db.lrange(name, 0, -1) == [items[2]]
        assert unacked(db, tags[2:]) == [(None, False)]
        # a and b reached the channel (b's consumer raised): held, recorded, unacked.
        assert all(record is not None for record, _ in unacked(db, tags[:2]))
    finally:
        taker.close()
    # Closed, the channel hands back what it held, as kombu does: nothing is lost.
    back = {json.loads(item)["properties"]["delivery_tag"] for item in db.lrange(name, 0, -1)}
    assert back == set(tags)


def test_a_no_ack_consumer_is_never_taken_for_so_nothing_is_recorded(db: Any, name: str) -> None:
    (item,) = publish(name, ["x"])
    conn: Any = WorkerConnection(REDIS_URL, connect_timeout=2)
    got: list[Any] = []
    try:
        channel = conn.channel()
        Consumer(
            channel, [Queue(name, channel=channel)], on_message=got.append, no_ack=True
        ).consume()
        assert fetch(conn) == 0
        deadline = time.monotonic() + TIMEOUT
        while not got:  # kombu's own BRPOP brings it
            assert time.monotonic() < deadline
            wait_and_drain(conn)
        assert [m.body for m in got] == [b'"x"']
        tag = json.loads(item)["properties"]["delivery_tag"]
        assert unacked(db, [tag]) == [(None, False)]
    finally:
        conn.release()


def test_acks_written_into_a_connection_the_server_closed_are_written_again(
    db: Any, name: str
) -> None:
    publish(name, ["a", "b"])
    taker = Taker(name, prefetch=2)
    try:
        assert taker.fetch() == 2
        first, second = taker.got
        first.ack()
        kill_ack_connection(db)
        second.ack()  # into the dead socket, or found dead: either way written again
        taker.channel.settler.settle()
        tags = [first.delivery_tag, second.delivery_tag]
        assert unacked(db, tags) == [(None, False)] * 2
    finally:
        taker.close()


def test_an_ack_after_the_connection_sat_unused_checks_it_first(db: Any, name: str) -> None:
    publish(name, ["a", "b", "c"])
    taker = Taker(name, prefetch=3)
    try:
        assert taker.fetch() == 3
        settler = taker.channel.settler
        settler.idle = 0.0  # every ack finds the connection unused "too long"
        taker.got[0].ack()  # a new connection: nothing to look at yet
        taker.got[1].ack()  # reads the first ack's replies, PINGs, then writes
        kill_ack_connection(db)
        taker.got[2].ack()  # the PING finds it dead: written on a new one
        settler.settle()
        assert unacked(db, [m.delivery_tag for m in taker.got]) == [(None, False)] * 3
    finally:
        taker.close()


def test_messages_kombu_would_refuse_are_parked_and_those_behind_them_delivered(
    db: Any, name: str
) -> None:
    marker = uuid.uuid4().hex
    null_tag = envelope_like(db, name, "null tag", delivery_tag=None)
    odd_headers = envelope_like(db, name, "odd headers", delivery_tag=f"{marker}-h")
    odd_headers["headers"] = [1, 2]
    bad = [json.dumps({**m, "m": marker}).encode() for m in (null_tag, odd_headers)]
    # A tag of bytes that are not UTF-8: cjson reads it (and the take records it).
    raw_tag = json.dumps({**envelope_like(db, name, "raw tag"), "m": marker}).encode()
    bad.append(raw_tag.replace(b'"delivery_tag": "', b'"delivery_tag": "\xff', 1))
    db.lpush(name, *bad)
    publish(name, ["good"])
    taker = Taker(name, prefetch=10)
    try:
        assert taker.fetch() == 4
        assert [m.body for m in taker.got] == [b'"good"']
        parked = [item for item in db.lrange(UNREADABLE, 0, -1) if marker.encode() in item]
        assert sorted(parked) == sorted(bad)
        assert db.hlen("unacked") == db.zcard("unacked_index")  # no record left behind
        assert not [k for k in db.hkeys("unacked") if k.startswith(b"\xff")]
    finally:
        taker.close()
        for item in bad:
            db.lrem(UNREADABLE, 0, item)


def test_a_cold_stop_during_a_take_hands_back_what_was_not_handed_over(db: Any, name: str) -> None:
    items = publish(name, ["a", "b", "c"])
    taker = Taker(name, prefetch=3)

    def stop_at_first(message: Any) -> None:
        taker.got.append(message)
        taker.channel.stop_taking()  # as the cold-shutdown path does, from the loop's turn

    taker.consumer.on_message = stop_at_first
    try:
        assert taker.fetch() == 3
        assert [m.body for m in taker.got] == [b'"a"']
        assert db.lrange(name, 0, -1) == [items[2], items[1]]  # b first again, then c
        tags = [json.loads(item)["properties"]["delivery_tag"] for item in items]
        assert unacked(db, tags[1:]) == [(None, False)] * 2
        assert taker.fetch() == 0  # stopped: takes no more
    finally:
        taker.close()
