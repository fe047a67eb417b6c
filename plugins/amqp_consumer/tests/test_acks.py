"""`Acks` against a real RabbitMQ: what the broker ends up holding after each pattern of
acks, rejects, requeues and flushes.

Every test reads its verdict from the broker: the consumer's connection is closed
(py-amqp waits for ``connection.close-ok``, which RabbitMQ sends only once the
connection's channels are gone and their unacknowledged deliveries are back in their
queues), then a second connection counts and fetches what the queue holds. A delivery
that comes back was not settled; one that does not was. A bad ack (one that names a
delivery no longer outstanding) closes the channel with PRECONDITION_FAILED, which the
synchronous ``basic.qos`` each test sends after its last flush would raise.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer

from bootkit_amqp_consumer.acks import Acks
from test_transport import connect

TIMEOUT = 4.0  # every wait below gives up after this long
PREFETCH = 50


def task_id(body: bytes) -> str:
    return f"task-{body.decode()}"


def bodies(count: int) -> list[bytes]:
    return [str(i).encode() for i in range(1, count + 1)]


@contextmanager
def fresh_queue() -> Iterator[str]:
    """A queue of its own, declared now and deleted afterwards."""
    name = f"test-acks-{uuid.uuid4().hex[:8]}"
    conn = connect()
    try:
        conn.default_channel.queue_declare(name, durable=False, auto_delete=False)
    finally:
        conn.release()
    try:
        yield name
    finally:
        conn = connect()
        try:
            conn.default_channel.queue_delete(name)
        finally:
            conn.release()


@pytest.fixture
def queue_name() -> Iterator[str]:
    with fresh_queue() as name:
        yield name


def publish(queue: str, payloads: list[bytes]) -> None:
    conn = connect()
    try:
        producer = Producer(conn.default_channel)
        for body in payloads:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                content_type="application/octet-stream",
                content_encoding="binary",
            )
        # A synchronous round trip on the same channel: every publish above is in.
        conn.default_channel.basic_qos(0, PREFETCH, False)
    finally:
        conn.release()


@dataclass(frozen=True)
class Left:
    """A message found in the queue afterwards."""

    body: bytes
    redelivered: bool


def left_in(queue: str) -> list[Left]:
    """Every message `queue` holds, taken off it (by a second connection; the consumer's
    is closed by now, so everything it left unsettled is back in the queue)."""
    conn = connect()
    try:
        channel = conn.default_channel
        _, depth, consumers = channel.queue_declare(queue, passive=True)
        assert consumers == 0
        found: list[Left] = []
        bound = Queue(queue, no_declare=True)(channel)
        while (message := bound.get(no_ack=True)) is not None:
            found.append(Left(message.body, bool(message.delivery_info["redelivered"])))
        assert len(found) == depth
        return found
    finally:
        conn.release()


class Reader:
    """A consumer on its own `WorkerConnection` whose deliveries pass through `Acks`."""

    def __init__(self, queue: str, *, coalesce: bool = True, prefetch: int = PREFETCH) -> None:
        self.queue = queue
        self.conn = connect()
        self.channel = self.conn.channel()
        self.channel.basic_qos(0, prefetch, False)
        self.acks = Acks(self.channel, coalesce=coalesce)
        self.messages: list[Any] = []
        self.consumer = Consumer(
            self.channel, [Queue(queue, no_declare=True)], on_message=self._on_message
        )
        self.consumer.consume()

    def _on_message(self, message: Any) -> None:
        self.acks.received(message)
        self.messages.append(message)

    def receive(self, count: int) -> list[Any]:
        """The first `count` deliveries, waiting (within TIMEOUT) for those not in yet."""
        deadline = time.monotonic() + TIMEOUT
        while len(self.messages) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{len(self.messages)} of {count} deliveries within {TIMEOUT:g}s")
            try:
                self.conn.drain_events(timeout=min(remaining, 0.5))
            except TimeoutError:
                continue
        return self.messages[:count]

    def ack(self, message: Any) -> None:
        self.acks.ack(message, task_id(message.body))

    def check_channel(self) -> None:
        """A synchronous round trip: raises if the broker closed the channel (a bad ack)."""
        self.channel.basic_qos(0, PREFETCH, False)
        assert self.channel.is_open

    def close(self) -> None:
        self.conn.release()


@pytest.fixture
def reader(queue_name: str) -> Iterator[Reader]:
    found = Reader(queue_name)
    yield found
    found.close()


def test_in_order_acks_flushed_once_settle_every_delivery(queue_name: str, reader: Reader) -> None:
    payloads = bodies(20)
    publish(queue_name, payloads)
    received = reader.receive(20)
    assert [m.body for m in received] == payloads
    for message in received:
        reader.ack(message)
    assert reader.acks.unsent() == [task_id(b) for b in payloads]  # nothing sent yet

    reader.acks.flush()

    assert reader.acks.unsent() == []
    reader.check_channel()
    reader.close()
    assert left_in(queue_name) == []


def test_a_multiple_ack_never_covers_an_open_delivery(queue_name: str, reader: Reader) -> None:
    publish(queue_name, bodies(5))
    one, two, three, four, five = reader.receive(5)
    for message in (one, two, four, five):
        reader.ack(message)

    reader.acks.flush()

    assert reader.acks.unsent() == []
    reader.check_channel()
    reader.close()
    assert left_in(queue_name) == [Left(b"3", redelivered=True)]
    assert three.body == b"3"


@pytest.mark.parametrize("flush_before_reject", [False, True])
def test_a_reject_between_acks_settles_everything_without_a_channel_error(
    queue_name: str, reader: Reader, flush_before_reject: bool
) -> None:
    publish(queue_name, bodies(5))
    one, two, three, four, five = reader.receive(5)
    reader.ack(one)
    reader.ack(two)
    if flush_before_reject:
        reader.acks.flush()
    reader.acks.reject(three, requeue=False)
    reader.ack(four)
    reader.ack(five)

    reader.acks.flush()

    reader.check_channel()  # no PRECONDITION_FAILED "unknown delivery tag"
    # The channel still carries deliveries and acks: one more round on it.
    Producer(reader.channel).publish(
        b"6", exchange="", routing_key=queue_name, content_type="application/octet-stream"
    )
    (six,) = reader.receive(6)[5:]
    assert six.body == b"6"
    reader.ack(six)
    reader.acks.flush()
    reader.check_channel()
    assert reader.acks.unsent() == []
    reader.close()
    assert left_in(queue_name) == []


def test_a_requeue_between_acks_redelivers_exactly_that_delivery_on_the_channel(
    queue_name: str, reader: Reader
) -> None:
    publish(queue_name, bodies(5))
    one, two, three, four, five = reader.receive(5)
    for message in (one, two, four, five):
        reader.ack(message)

    reader.acks.reject(three, requeue=True)
    reader.acks.flush()

    (again,) = reader.receive(6)[5:]
    assert (again.body, again.delivery_info["redelivered"]) == (b"3", True)
    assert again.delivery_tag > five.delivery_tag
    # A requeued message goes back to the head of the queue, so any other requeued one
    # would come before a message published now.
    publish(queue_name, [b"sentinel"])
    assert [m.body for m in reader.receive(7)[5:]] == [b"3", b"sentinel"]
    reader.ack(again)
    reader.ack(reader.messages[6])
    reader.acks.flush()
    reader.check_channel()
    reader.close()
    assert left_in(queue_name) == []


def test_acks_not_flushed_when_the_connection_closes_come_back_and_are_named_unsent(
    queue_name: str, reader: Reader
) -> None:
    publish(queue_name, bodies(4))
    one, two, three, four = reader.receive(4)
    reader.ack(one)
    reader.ack(two)
    reader.acks.flush()
    reader.ack(three)
    reader.ack(four)

    assert sorted(reader.acks.unsent()) == [task_id(b"3"), task_id(b"4")]
    reader.check_channel()
    reader.close()
    assert left_in(queue_name) == [Left(b"3", True), Left(b"4", True)]


def test_without_coalescing_acks_go_out_at_once(queue_name: str) -> None:
    reader = Reader(queue_name, coalesce=False)
    try:
        publish(queue_name, bodies(5))
        for message in reader.receive(5):
            reader.ack(message)
        assert reader.acks.unsent() == []
        reader.check_channel()
    finally:
        reader.close()  # no flush: nothing was waiting for one
    assert left_in(queue_name) == []


@dataclass(frozen=True)
class Plan:
    """What happens to each of `count` deliveries, in which order, and where flushes go."""

    count: int
    fates: tuple[str, ...]  # per delivery: "ack", "reject" or "open"
    order: tuple[int, ...]  # the order the acks and rejects are made in
    flush_after: tuple[bool, ...]  # per step of `order`: flush after it
    final_flush: bool


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(min_value=1, max_value=10))
    fates = draw(
        st.lists(st.sampled_from(["ack", "reject", "open"]), min_size=count, max_size=count)
    )
    order = draw(st.permutations(range(count)))
    flush_after = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    return Plan(count, tuple(fates), tuple(order), tuple(flush_after), draw(st.booleans()))


@settings(max_examples=25, deadline=None)
@given(plan=plans())
def test_exactly_the_open_deliveries_and_the_unflushed_acks_are_redelivered(plan: Plan) -> None:
    with fresh_queue() as queue:
        payloads = bodies(plan.count)
        publish(queue, payloads)
        reader = Reader(queue)
        try:
            received = reader.receive(plan.count)
            unflushed: set[bytes] = set()
            for index, flush in zip(plan.order, plan.flush_after, strict=True):
                message, fate = received[index], plan.fates[index]
                if fate == "ack":
                    reader.ack(message)
                    unflushed.add(message.body)
                elif fate == "reject":
                    reader.acks.reject(message, requeue=False)
                if flush:
                    reader.acks.flush()
                    unflushed.clear()
            if plan.final_flush:
                reader.acks.flush()
                unflushed.clear()
            assert sorted(reader.acks.unsent()) == sorted(task_id(b) for b in unflushed)
            reader.check_channel()
        finally:
            reader.close()
        back = {b for b, fate in zip(payloads, plan.fates, strict=True) if fate == "open"}
        back |= unflushed
        found = left_in(queue)
        assert sorted(m.body for m in found) == sorted(back)
        assert all(m.redelivered for m in found)
