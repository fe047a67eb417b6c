"""The AMQP frames a task message arrives in, parsed for the hot path.

A Celery task message carries some twenty application headers, and decoding that
field table is most of what py-amqp spends on a delivery. `frame_handler` is a
drop-in for py-amqp's own (its ``frame_handler`` connection argument): the same
frame sequence rules, but content headers are decoded by `decode_properties`, which
reads the table with one branch per field type. Values come out as py-amqp gives
them (strings as ``str``, or ``bytes`` when not UTF-8; timestamps as naive UTC
datetimes; decimals as ``Decimal``), so kombu and the consumer see no difference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from struct import Struct, unpack_from
from typing import Any

from amqp import spec
from amqp.basic_message import Message as AMQPMessage
from amqp.exceptions import FrameSyntaxError, UnexpectedFrame

_LONG = Struct(">I").unpack_from
_INT = Struct(">i").unpack_from
CONTENT_METHODS = frozenset((spec.Basic.Return, spec.Basic.Deliver, spec.Basic.GetOk))
DELIVER = spec.Basic.Deliver
# basic.deliver's arguments after the consumer tag: delivery tag, the redelivered bit.
_DELIVERY = Struct(">QB").unpack_from

# Basic's properties in wire order: flag bit, name, kind ("s" shortstr, "o" octet,
# "F" table, "T" 64-bit timestamp).
BASIC_PROPERTIES = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "application_headers", "F"),
    (0x1000, "delivery_mode", "o"),
    (0x0800, "priority", "o"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "T"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw


def _value(buf: bytes, offset: int) -> tuple[Any, int]:
    """One field value at `offset`: (value, offset after it)."""
    kind = buf[offset]
    offset += 1
    if kind == 0x53:  # S: long string
        (size,) = _LONG(buf, offset)
        offset += 4
        return _text(buf[offset : offset + size]), offset + size
    if kind == 0x56:  # V: void
        return None, offset
    if kind == 0x74:  # t: boolean
        return buf[offset] != 0, offset + 1
    if kind == 0x46:  # F: table
        (size,) = unpack_from(">I", buf, offset)
        offset += 4
        return _table(buf, offset, offset + size), offset + size
    if kind == 0x41:  # A: array
        (size,) = unpack_from(">I", buf, offset)
        offset += 4
        end = offset + size
        items = []
        while offset < end:
            item, offset = _value(buf, offset)
            items.append(item)
        return items, end
    if kind in _NUMBERS:
        fmt, width = _NUMBERS[kind]
        return unpack_from(fmt, buf, offset)[0], offset + width
    if kind == 0x78:  # x: byte array
        (size,) = unpack_from(">I", buf, offset)
        offset += 4
        return bytes(buf[offset : offset + size]), offset + size
    if kind == 0x44:  # D: decimal (scale, then a signed 32-bit value)
        scale = buf[offset]
        (number,) = unpack_from(">i", buf, offset + 1)
        return Decimal(number) / Decimal(10**scale), offset + 5
    if kind == 0x54:  # T: timestamp
        (seconds,) = unpack_from(">Q", buf, offset)
        return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None), offset + 8
    raise FrameSyntaxError(f"Unknown value in table: {chr(kind)!r}")


# Integer and float field kinds: struct format and width. "s" is RabbitMQ's signed
# 16-bit integer and "l" its signed 64-bit one (the AMQP errata letters).
_NUMBERS = {
    0x62: (">b", 1),  # b
    0x42: (">B", 1),  # B
    0x55: (">h", 2),  # U
    0x73: (">h", 2),  # s
    0x75: (">H", 2),  # u
    0x49: (">i", 4),  # I
    0x69: (">I", 4),  # i
    0x4C: (">q", 8),  # L
    0x6C: (">q", 8),  # l
    0x66: (">f", 4),  # f
    0x64: (">d", 8),  # d
}


# Field names seen so far, as decoded: a task message's twenty names are the same
# in every message, and a lookup costs less than decoding each one again.
_NAMES: dict[bytes, Any] = {}
_NAMES_MAX = 1024


def _name(raw: bytes) -> Any:
    try:
        name: Any = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        name = raw
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[raw] = name
    return name


def _table(buf: bytes, offset: int, end: int) -> dict[Any, Any]:
    # The kinds a task message's fields have (strings, voids, a retry count, a flag)
    # are read inline; the rest by `_value`.
    table: dict[Any, Any] = {}
    names = _NAMES
    if type(buf) is not bytes:  # a name is looked up by its slice, which must hash
        buf = bytes(buf)
    while offset < end:
        start = offset + 1
        offset = start + buf[offset]
        raw = buf[start:offset]
        key = names.get(raw)
        if key is None:
            key = _name(raw)
        kind = buf[offset]
        if kind == 0x53:  # S: long string
            start = offset + 5
            offset = start + _LONG(buf, offset + 1)[0]
            raw = buf[start:offset]
            try:
                table[key] = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                table[key] = raw
        elif kind == 0x56:  # V: void
            table[key] = None
            offset += 1
        elif kind == 0x49:  # I: signed 32-bit
            table[key] = _INT(buf, offset + 1)[0]
            offset += 5
        elif kind == 0x74:  # t: boolean
            table[key] = buf[offset + 1] != 0
            offset += 2
        else:
            table[key], offset = _value(buf, offset)
    return table


def _present(flags: int) -> tuple[tuple[str, str], ...]:
    """The (name, kind) of each property `flags` says is there, in wire order."""
    return tuple((name, kind) for bit, name, kind in BASIC_PROPERTIES if flags & bit)


# The properties each flag word holds: a producer sends the same few every time.
_PRESENT: dict[int, tuple[tuple[str, str], ...]] = {}


def decode_properties(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """Basic's content properties at `offset`: (properties, offset after them)."""
    (flags,) = unpack_from(">H", buf, offset)
    offset += 2
    present = _PRESENT.get(flags)
    if present is None:
        present = _PRESENT[flags] = _present(flags)  # at most 2**14 flag words
    properties: dict[str, Any] = {}
    for name, kind in present:
        if kind == "s":
            size = buf[offset]
            properties[name] = _text(buf[offset + 1 : offset + 1 + size])
            offset += 1 + size
        elif kind == "F":
            (size,) = _LONG(buf, offset)
            offset += 4
            properties[name] = _table(buf, offset, offset + size)
            offset += size
        elif kind == "o":
            properties[name] = buf[offset]
            offset += 1
        else:
            (properties[name],) = unpack_from(">Q", buf, offset)
            offset += 8
    return properties, offset


class Message(AMQPMessage):  # type: ignore[misc]
    """py-amqp's message, its Basic properties read by `decode_properties`."""

    def _load_properties(self, class_id: int, buf: bytes, offset: int) -> int:
        if class_id != spec.Basic.CLASS_ID:
            return int(super()._load_properties(class_id, buf, offset))
        self.properties, offset = decode_properties(buf, offset)
        return offset


Callback = Callable[[int, tuple[int, int], bytes, Any], Any]


def frame_handler(connection: Any, callback: Callback) -> Callable[[tuple[int, int, bytes]], bool]:
    """The connection's frame reader: assembles method, header and body frames into
    methods and messages and hands each complete one to `callback`. Returns whether
    a frame completed a method, as py-amqp's own handler does."""
    expected: dict[int, int] = {}  # channel -> the frame type it must send next
    partial: dict[int, Message] = {}  # channel -> the message being assembled

    def on_frame(frame: tuple[int, int, bytes]) -> bool:
        frame_type, channel, payload = frame
        connection.bytes_recv += 1
        if frame_type == 8:  # heartbeat
            return False
        wanted = expected.get(channel, 1)
        if frame_type != wanted:
            raise UnexpectedFrame(f"Received frame {frame_type} while expecting type: {wanted}")
        if frame_type == 1:
            method = unpack_from(">HH", payload, 0)
            if method in CONTENT_METHODS:
                partial[channel] = Message(frame_method=method, frame_args=payload)
                expected[channel] = 2
                return False
            callback(channel, method, payload, None)
            return True
        message = partial[channel]
        if frame_type == 2:
            message.inbound_header(payload)
        else:
            message.inbound_body(payload)
        if not message.ready:
            expected[channel] = 3
            return False
        expected[channel] = 1
        del partial[channel]
        if message.frame_method == DELIVER:
            deliver(channel, message)
        else:
            callback(channel, message.frame_method, message.frame_args, message)
        return True

    def deliver(channel_id: int, message: Message) -> None:
        # py-amqp's dispatch_method for basic.deliver, its arguments read inline; a
        # closing channel, or a caller waiting for a delivery, is left to py-amqp.
        payload = message.frame_args
        channel = (connection.channels or {}).get(channel_id)
        if channel is None or channel.is_closing or DELIVER in channel._pending:
            callback(channel_id, DELIVER, payload, message)
            return
        if channel.auto_decode and "content_encoding" in message.properties:
            with contextlib.suppress(Exception):  # as py-amqp: undecodable stays bytes
                message.body = message.body.decode(message.properties["content_encoding"])
        listener = channel._callbacks.get(DELIVER)
        if listener is None:
            return
        end = 5 + payload[4]
        consumer_tag = payload[5:end].decode("utf-8", "surrogatepass")
        delivery_tag, bits = _DELIVERY(payload, end)
        offset = end + 10 + payload[end + 9]
        exchange = payload[end + 10 : offset].decode("utf-8", "surrogatepass")
        end = offset + 1 + payload[offset]
        routing_key = payload[offset + 1 : end].decode("utf-8", "surrogatepass")
        listener(consumer_tag, delivery_tag, bool(bits & 1), exchange, routing_key, message)

    return on_frame
