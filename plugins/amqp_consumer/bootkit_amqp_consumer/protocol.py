"""Celery's task message, protocol 2 (and 1 on input): build for sending, decode on receipt.

Decoding never trusts the message: every field is type-checked and any problem
becomes a `BadMessageError` with a short reason label, so the consumer can reject
the message and carry on. A content type outside the accepted set is refused before
its body is looked at.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads
from kombu.utils.json import object_hook

from bootkit_amqp_consumer.errors import BadMessageError

JSON = "application/json"
# What kombu's JSON decoder does (its types, such as datetimes, in {"__type__": ...}),
# without making a decoder per message; a body that names no type needs no hook.
_JSON = json.JSONDecoder(object_hook=object_hook)
_PLAIN_JSON = json.JSONDecoder()


@dataclass(slots=True)  # not frozen, for speed: see `job`
class TaskRequest:
    """A decoded task message; not changed once made."""

    id: str
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    reply_to: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    embed: Mapping[str, Any] = field(default_factory=dict)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class OutgoingMessage:
    """A task message ready for ``kombu.Producer.publish``."""

    body: tuple[Any, ...]
    headers: dict[str, Any]
    properties: dict[str, Any]


def origin() -> str:
    return f"gen{os.getpid()}@{socket.gethostname()}"


def build(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    task_id: str,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: datetime | float | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    ignore_result: bool = False,
    reply_to: str = "",
    priority: int | None = None,
) -> OutgoingMessage:
    """A protocol 2 message, with every header Celery sends."""
    now = datetime.now(UTC)
    if countdown is not None:
        eta = now + timedelta(seconds=countdown)
    if isinstance(expires, (int, float)):
        expires = now + timedelta(seconds=expires)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": eta.isoformat() if eta else None,
        "expires": expires.isoformat() if expires else None,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": repr(dict(kwargs)),
        "origin": origin(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "delivery_mode": 2,
    }
    if priority is not None:
        properties["priority"] = priority
    if expires is not None:
        # In seconds: kombu's publish() puts it on the wire as milliseconds.
        properties["expiration"] = max(0.0, (expires - now).total_seconds())
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return OutgoingMessage((list(args), dict(kwargs), embed), headers, properties)


def retry_of(request: TaskRequest, countdown: float | None) -> OutgoingMessage:
    """The message that runs `request` again in `countdown` seconds, one retry later."""
    return build(
        request.name,
        request.args,
        request.kwargs,
        task_id=request.id,
        countdown=countdown,
        expires=request.expires,
        retries=request.retries + 1,
        time_limit=request.time_limit,
        soft_time_limit=request.soft_time_limit,
        root_id=request.root_id,
        parent_id=request.parent_id,
        ignore_result=request.ignore_result,
        reply_to=request.reply_to or "",
    )


def decode(
    body: bytes | str,
    *,
    content_type: str | None,
    content_encoding: str | None,
    headers: Mapping[str, Any] | None,
    properties: Mapping[str, Any] | None,
    accept: frozenset[str],
    max_size: int,
) -> TaskRequest:
    """Turn a raw message into a `TaskRequest`.

    Raises:
        BadMessageError: the reason says what is wrong; nothing was executed.
    """
    # py-amqp hands a body over decoded when it names its encoding: an ASCII one is
    # as long as its bytes, and JSON reads the text as it is.
    if isinstance(body, str) and not body.isascii():
        body = body.encode("utf-8")
    if len(body) > max_size:
        raise BadMessageError("oversize", f"body of {len(body)} bytes exceeds {max_size}")
    if content_type not in accept:
        raise BadMessageError(
            "content_type_refused", f"content type {content_type!r} is not accepted"
        )
    if headers is not None and not isinstance(headers, Mapping):
        raise BadMessageError("bad_headers", f"headers are {type(headers).__name__}, not a table")
    try:
        if content_type == JSON and body:  # kombu's JSON, with one decoder made once
            text = body if isinstance(body, str) else body.decode("utf-8")
            payload = (_JSON if "__type__" in text else _PLAIN_JSON).decode(text)
        else:
            raw = body.encode("utf-8") if isinstance(body, str) else body
            payload = loads(raw, content_type, content_encoding or "utf-8", accept=accept)
    except ContentDisallowed as exc:
        raise BadMessageError("content_type_refused", str(exc)) from None
    except Exception as exc:
        raise BadMessageError("undecodable", f"{type(exc).__name__}: {exc}") from None
    # A table decoded for this message alone is used as it is, not copied.
    headers = headers if type(headers) is dict else dict(headers or {})
    properties = properties if type(properties) is dict else dict(properties or {})
    if "task" in headers:
        return _v2(payload, headers, properties)
    return _v1(payload, properties)


def _v2(payload: Any, headers: dict[str, Any], properties: dict[str, Any]) -> TaskRequest:
    if not isinstance(payload, (list, tuple)) or len(payload) not in (2, 3):
        raise BadMessageError("bad_body", "protocol 2 body must be [args, kwargs, embed]")
    args, kwargs = payload[0], payload[1]
    embed = payload[2] if len(payload) == 3 else {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise BadMessageError("bad_body", "args must be a list and kwargs an object")
    if embed is not None and not isinstance(embed, dict):
        raise BadMessageError("bad_body", "embed must be an object")
    hard, soft = _timelimit(headers.get("timelimit"))
    return TaskRequest(
        id=_text(headers, "id"),
        name=_text(headers, "task"),
        args=tuple(args),
        kwargs={str(k): v for k, v in kwargs.items()},
        retries=_count(headers.get("retries")),
        eta=_when(headers.get("eta"), "eta"),
        expires=_when(headers.get("expires"), "expires"),
        time_limit=hard,
        soft_time_limit=soft,
        root_id=_optional_text(headers.get("root_id"), "root_id"),
        parent_id=_optional_text(headers.get("parent_id"), "parent_id"),
        group=_optional_text(headers.get("group"), "group"),
        origin=_optional_text(headers.get("origin"), "origin"),
        ignore_result=bool(headers.get("ignore_result")),
        reply_to=_optional_text(properties.get("reply_to"), "reply_to"),
        headers=headers,
        embed=embed or {},
    )


def _v1(payload: Any, properties: dict[str, Any]) -> TaskRequest:
    if not isinstance(payload, dict):
        raise BadMessageError("missing_task", "no task header and the body is not a v1 task")
    args = payload.get("args") or []
    kwargs = payload.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise BadMessageError("bad_body", "args must be a list and kwargs an object")
    hard, soft = _timelimit(payload.get("timelimit"))
    return TaskRequest(
        id=_text(payload, "id"),
        name=_text(payload, "task"),
        args=tuple(args),
        kwargs={str(k): v for k, v in kwargs.items()},
        retries=_count(payload.get("retries")),
        eta=_when(payload.get("eta"), "eta"),
        expires=_when(payload.get("expires"), "expires"),
        time_limit=hard,
        soft_time_limit=soft,
        reply_to=_optional_text(properties.get("reply_to"), "reply_to"),
        headers=payload,
    )


def _text(source: Mapping[str, Any], key: str) -> str:
    value = source.get(key)
    if not isinstance(value, str) or not value:
        raise BadMessageError(
            "missing_header" if value is None else "bad_header",
            f"{key} must be a non-empty string, got {value!r}",
        )
    return value


def _optional_text(value: Any, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise BadMessageError("bad_header", f"{key} must be a string, got {value!r}")


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadMessageError("bad_header", f"retries must be a count, got {value!r}")
    return value


def _when(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadMessageError("bad_header", f"{key} is not ISO-8601: {value!r}") from None
    else:
        raise BadMessageError("bad_header", f"{key} must be an ISO-8601 string, got {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BadMessageError("bad_header", f"timelimit must be [hard, soft], got {value!r}")
    limits: list[float | None] = []
    for item in value:
        if item is None:
            limits.append(None)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and item > 0:
            limits.append(float(item))
        else:
            raise BadMessageError(
                "bad_header", f"timelimit entries must be positive numbers, got {value!r}"
            )
    return limits[0], limits[1]
