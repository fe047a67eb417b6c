"""The hot path's content-header decoder reads every property and field type as
py-amqp does (py-amqp encodes here, so the bytes are what a broker relays)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import amqp
import pytest
from amqp.exceptions import FrameSyntaxError
from amqp.serialization import decode_properties_basic
from hypothesis import given, settings
from hypothesis import strategies as st

from bootkit_amqp_consumer.frames import decode_properties
from bootkit_amqp_consumer.protocol import build


def encoded(**properties: Any) -> bytes:
    return bytes(amqp.Message(b"", **properties)._serialize_properties())


def test_a_celery_task_messages_properties_decode_as_py_amqp_decodes_them() -> None:
    message = build("app.add", [1, 2], {"z": 3}, task_id=str(uuid.uuid4()), countdown=5)
    raw = encoded(
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=message.headers,
        **message.properties,
    )
    assert decode_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_every_basic_property_is_read() -> None:
    raw = encoded(
        content_type="application/json",
        content_encoding="utf-8",
        application_headers={"a": 1},
        delivery_mode=2,
        priority=7,
        correlation_id="c",
        reply_to="r",
        expiration="1000",
        message_id="m",
        timestamp=1_700_000_000,
        type="t",
        user_id="guest",
        app_id="app",
        cluster_id="cl",
    )
    properties, offset = decode_properties(raw, 0)
    assert properties == decode_properties_basic(raw, 0)[0]
    assert offset == len(raw)
    assert properties["priority"] == 7
    assert properties["timestamp"] == 1_700_000_000


def test_table_values_of_every_kind_come_out_as_py_amqp_gives_them() -> None:
    headers = {
        "text": "é",
        "none": None,
        "yes": True,
        "no": False,
        "small": -5,
        "big": 2**40,
        "negative_big": -(2**40),
        "float": 2.5,
        "decimal": Decimal("1.25"),
        "when": datetime(2026, 12, 1, 12, 30),
        "list": [1, "two", None, [3.0], {"k": "v"}],
        "table": {"inner": {"deeper": [True]}},
    }
    raw = encoded(application_headers=headers)
    assert decode_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_a_byte_array_field_is_bytes() -> None:
    # py-amqp writes no "x" fields, so the table is spelt out: key "b", kind "x",
    # length 2, then the bytes; flags say "application headers only".
    table = b"\x01b" + b"x" + (2).to_bytes(4, "big") + b"\x00\xff"
    raw = (0x2000).to_bytes(2, "big") + len(table).to_bytes(4, "big") + table
    assert decode_properties(raw, 0) == ({"application_headers": {"b": b"\x00\xff"}}, len(raw))
    assert decode_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_a_string_that_is_not_utf8_stays_bytes() -> None:
    raw = bytearray(encoded(application_headers={"k": "abc"}))
    raw[raw.index(b"abc")] = 0xFF  # no longer valid UTF-8
    headers = decode_properties(bytes(raw), 0)[0]["application_headers"]
    assert headers == {"k": b"\xffbc"}


def test_an_unknown_field_type_is_a_frame_syntax_error() -> None:
    raw = bytearray(encoded(application_headers={"k": None}))
    raw[raw.rindex(b"V")] = ord("?")
    with pytest.raises(FrameSyntaxError):
        decode_properties(bytes(raw), 0)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(headers=st.dictionaries(st.text(max_size=12), values, max_size=8))
def test_any_headers_table_decodes_as_py_amqp_decodes_it(headers: dict[str, Any]) -> None:
    raw = encoded(content_type="application/json", application_headers=headers)
    assert decode_properties(raw, 0) == decode_properties_basic(raw, 0)
