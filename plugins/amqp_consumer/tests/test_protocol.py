"""Protocol 2 messages: what we build is what Celery builds; decoding never trusts input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootkit_amqp_consumer.errors import BadMessageError
from bootkit_amqp_consumer.protocol import JSON, build, decode

ACCEPT = frozenset({JSON})
HEADER_KEYS = {
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
    "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
}  # fmt: skip


def roundtrip(body: Any, headers: dict[str, Any], properties: dict[str, Any] | None = None) -> Any:
    return decode(
        json.dumps(body).encode(),
        content_type=JSON,
        content_encoding="utf-8",
        headers=headers,
        properties=properties or {},
        accept=ACCEPT,
        max_size=1 << 20,
    )


def test_kombu_typed_json_values_decode_to_their_types() -> None:
    # A Celery client's kombu writes a datetime argument as {"__type__": ...}.
    from kombu.utils.json import dumps

    when = datetime(2026, 12, 7, 13, 30, tzinfo=UTC)
    for args in ([when, "x"], ["plain", {"__type__": None}], ["no types at all"]):
        request = decode(
            dumps([args, {"at": args[0]}, {}]).encode(),
            content_type=JSON,
            content_encoding="utf-8",
            headers={"task": "proj.add", "id": "t1"},
            properties={},
            accept=ACCEPT,
            max_size=1 << 20,
        )
        assert request.args == tuple(args)
        assert request.kwargs == {"at": args[0]}


def test_built_message_has_every_header_celery_sends() -> None:
    message = build("proj.add", (1, 2), {"z": 3}, task_id="t1", countdown=5, expires=60.0)
    assert set(message.headers) == HEADER_KEYS
    assert message.headers["timelimit"] == [None, None]
    assert message.headers["root_id"] == "t1"
    assert message.properties["correlation_id"] == "t1"
    assert message.properties["delivery_mode"] == 2
    assert 59 <= message.properties["expiration"] <= 60  # seconds; kombu sends ms
    assert message.body == (
        [1, 2],
        {"z": 3},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )


def test_built_message_decodes_to_the_same_request() -> None:
    eta = datetime.now(UTC) + timedelta(seconds=30)
    message = build(
        "proj.add",
        (1, 2),
        {"z": 3},
        task_id="t1",
        eta=eta,
        retries=2,
        time_limit=9,
        soft_time_limit=4,
    )
    request = roundtrip(message.body, message.headers, message.properties)
    assert (request.id, request.name, request.args, request.kwargs) == (
        "t1",
        "proj.add",
        (1, 2),
        {"z": 3},
    )
    assert (request.retries, request.eta, request.time_limit, request.soft_time_limit) == (
        2,
        eta,
        9.0,
        4.0,
    )


def test_celery_built_message_decodes() -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery(broker="memory://")
    message = app.amqp.as_task_v2(
        "t2",
        "proj.mul",
        args=(3, 4),
        kwargs={"k": 1},
        countdown=10,
        expires=60,
        time_limit=8,
        soft_time_limit=5,
    )
    request = roundtrip(message.body, message.headers, message.properties)
    assert (request.id, request.name, request.args, request.kwargs) == (
        "t2",
        "proj.mul",
        (3, 4),
        {"k": 1},
    )
    assert request.eta is not None
    assert request.expires is not None
    assert (request.time_limit, request.soft_time_limit) == (8.0, 5.0)


def test_protocol_1_body_is_read() -> None:
    request = roundtrip(
        {"task": "proj.add", "id": "t3", "args": [1], "kwargs": {}, "retries": 1}, {}
    )
    assert (request.name, request.id, request.args, request.retries) == ("proj.add", "t3", (1,), 1)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        ([[], {}, {}], {"task": "x"}, "missing_header"),
        ([[], {}, {}], {"task": "x", "id": 3}, "bad_header"),
        ([[], {}, {}], {"task": "x", "id": "i", "retries": "x"}, "bad_header"),
        ([[], {}, {}], {"task": "x", "id": "i", "eta": 5}, "bad_header"),
        ([[], {}, {}], {"task": "x", "id": "i", "eta": "tomorrow"}, "bad_header"),
        ([[], {}, {}], {"task": "x", "id": "i", "timelimit": "y"}, "bad_header"),
        ({"a": 1}, {"task": "x", "id": "i"}, "bad_body"),
        ([1, {}, {}], {"task": "x", "id": "i"}, "bad_body"),
        ([1, 2, 3], {}, "missing_task"),
    ],
)
def test_malformed_fields_are_named(body: Any, headers: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadMessageError) as info:
        roundtrip(body, headers)
    assert info.value.reason == reason


def test_refused_content_type_is_never_decoded() -> None:
    with pytest.raises(BadMessageError) as info:
        decode(
            b"\x80\x04K\x01.",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "x", "id": "i"},
            properties={},
            accept=ACCEPT,
            max_size=1 << 20,
        )
    assert info.value.reason == "content_type_refused"


def test_oversize_body_is_refused_before_decoding() -> None:
    with pytest.raises(BadMessageError) as info:
        decode(
            b"x" * 11,
            content_type=JSON,
            content_encoding="utf-8",
            headers={},
            properties={},
            accept=ACCEPT,
            max_size=10,
        )
    assert info.value.reason == "oversize"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()),
    headers=st.none()
    | st.dictionaries(st.sampled_from(sorted(HEADER_KEYS)), json_values, max_size=8),
    content_type=st.sampled_from([JSON, "application/x-python-serialize", "text/plain", None]),
    encoding=st.sampled_from(["utf-8", "binary", None, "latin-1"]),
)
def test_decoder_only_ever_raises_bad_message(
    body: bytes, headers: dict[str, Any] | None, content_type: str | None, encoding: str | None
) -> None:
    reason = ""
    try:
        request = decode(
            body,
            content_type=content_type,
            content_encoding=encoding,
            headers=headers,
            properties={},
            accept=ACCEPT,
            max_size=1 << 20,
        )
    except BadMessageError as exc:
        reason = exc.reason
    else:
        assert isinstance(request.id, str)
        assert isinstance(request.name, str)
        assert isinstance(request.args, tuple)
        assert isinstance(request.kwargs, dict)
    assert reason or request is not None
