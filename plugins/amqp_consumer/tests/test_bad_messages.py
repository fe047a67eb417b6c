"""Malformed messages published raw to a live worker's queue, each followed by a good task.

Every bad message is rejected exactly once with a `message_rejected` event naming the
reason; the worker stays up, the good task completes and the queue ends empty. One
worker per broker serves the whole module, so it also proves the worker survives them
all in a row.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.protocol import build
from bootkit_amqp_consumer.redis_transport import UNREADABLE
from e2e_support import RESULTS_URL, WAIT, Broker, launch, stop, unique
from e2e_tasks import ADD, make_app
from tests.support import Service

pytestmark = pytest.mark.reliability  # the M and S rows of docs/reliability.md

MAX_SIZE = 2048  # --max-message-size of the module's worker
JSON = "application/json"


@dataclass(frozen=True)
class Shape:
    """A raw message: body, content type and encoding, headers (None for none)."""

    body: bytes
    headers: dict[str, Any] | None = field(default_factory=lambda: headers())
    content_type: str | None = JSON
    content_encoding: str | None = "utf-8"


def headers(**changes: Any) -> dict[str, Any]:
    """Celery's headers for a valid ADD, with `changes` applied (None removes a key)."""
    found = build(ADD, [1, 2], {}, task_id=str(uuid.uuid4())).headers
    for key, value in changes.items():
        if value is None:
            del found[key]
        else:
            found[key] = value
    return found


BODY = json.dumps([[1, 2], {}, {"callbacks": None, "errbacks": None, "chain": None}]).encode()

SHAPES = {
    "unknown task": (Shape(BODY, headers(task="e2e.no_such_task")), "unknown_task"),
    "truncated json": (Shape(BODY[:-4]), "undecodable"),
    "not utf-8": (Shape(b'[[1, "\xff\xfe"], {}, {}]'), "undecodable"),
    "no task header, not a v1 body": (Shape(BODY, headers(task=None)), "missing_task"),
    "retries is text": (Shape(BODY, headers(retries="x")), "bad_header"),
    "eta is a number": (Shape(BODY, headers(eta=5)), "bad_header"),
    "timelimit is text": (Shape(BODY, headers(timelimit="y")), "bad_header"),
    "id is a number": (Shape(BODY, headers(id=3)), "bad_header"),
    "empty body": (Shape(b""), "bad_body"),
    "wrong content type": (Shape(BODY, content_type="text/plain"), "content_type_refused"),
    "base64 garbage": (Shape(b"%%not*base64%%", content_encoding="base64"), "undecodable"),
    "oversize": (Shape(json.dumps([["x" * MAX_SIZE], {}, {}]).encode()), "oversize"),
}


class Canary:
    """Unpickling this creates the file `path`: what a hostile pickle could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@dataclass
class Target:
    """The module's worker, the queue it consumes and a client sending there."""

    worker: Service
    broker: Broker
    queue: str
    client: App


@pytest.fixture(scope="module", params=["rabbitmq", "redis"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    broker: Broker = request.getfixturevalue(f"{request.param}_broker")
    queue = unique("e2e-bad")
    worker = launch(
        tmp_path_factory.mktemp("bad-messages"),
        broker,
        queue,
        "--max-message-size",
        str(MAX_SIZE),
        pool="solo",
    )
    client = make_app(
        "e2e-client", broker=broker.url, result_backend=RESULTS_URL, default_queue=queue
    )
    try:
        with worker:
            yield Target(worker, broker, queue, client)
            # Stopped, the worker holds nothing: a message it never settled would be back.
            assert stop(worker) == 0
            assert broker.depth(queue) == 0
    finally:
        client.close()
        broker.delete(queue)


def publish_then_a_good_task(target: Target, shape: Shape) -> list[dict[str, Any]]:
    """Publish `shape`, then run a good task; the events logged from the first to the last."""
    mark = len(target.worker.events())
    target.broker.publish_raw(
        target.queue,
        shape.body,
        content_type=shape.content_type,
        content_encoding=shape.content_encoding,
        headers=shape.headers,
    )
    result = target.client.send_task(ADD, [2, 2])
    assert result.get(timeout=WAIT) == 4
    target.worker.wait_for_line(lambda line: result.id in line and "task_succeeded" in line, WAIT)
    return target.worker.events()[mark:]


@pytest.mark.parametrize(("shape", "reason"), SHAPES.values(), ids=SHAPES.keys())
def test_bad_message_is_rejected_once_and_the_worker_carries_on(
    target: Target, shape: Shape, reason: str
) -> None:
    logged = publish_then_a_good_task(target, shape)

    assert [e["reason"] for e in logged if e["event"] == "message_rejected"] == [reason]
    assert target.worker.proc.poll() is None
    assert target.broker.depth(target.queue) == 0


@pytest.mark.parametrize("target", ["redis"], indirect=True)  # a list item can be anything
def test_a_redis_item_that_is_no_kombu_message_is_parked_and_the_worker_carries_on(
    target: Target,
) -> None:
    item = f"not a kombu message {uuid.uuid4().hex}"
    with closing(redis.Redis.from_url(target.broker.url)) as client:
        mark = len(target.worker.events())
        client.lpush(target.queue, item)
        result = target.client.send_task(ADD, [2, 2])
        assert result.get(timeout=WAIT) == 4
        target.worker.wait_for_line(
            lambda line: result.id in line and "task_succeeded" in line, WAIT
        )
        logged = target.worker.events()[mark:]

        assert [e["reason"] for e in logged if e["event"] == "message_rejected"] == ["unreadable"]
        assert client.lrem(UNREADABLE, 0, item) == 1  # kept where it can be looked at
    assert target.worker.proc.poll() is None
    assert target.broker.depth(target.queue) == 0


def test_pickle_is_refused_without_being_decoded(target: Target, tmp_path: Path) -> None:
    proof, canary = tmp_path / "proof", tmp_path / "canary"
    pickle.loads(pickle.dumps(Canary(proof)))
    assert proof.exists()  # so decoding the message below would create `canary`
    shape = Shape(
        pickle.dumps(Canary(canary)),
        content_type="application/x-python-serialize",
        content_encoding="binary",
    )

    logged = publish_then_a_good_task(target, shape)

    assert [e["reason"] for e in logged if e["event"] == "message_rejected"] == [
        "content_type_refused"
    ]
    assert not canary.exists()
    assert target.worker.proc.poll() is None
    assert target.broker.depth(target.queue) == 0


CONTENT_TYPES = st.sampled_from(
    [JSON, "application/x-yaml", "application/x-msgpack", "text/plain", "", None]
)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what AMQP headers carry
HEADER_VALUES = st.one_of(st.none(), INT64, st.text(max_size=20), st.lists(INT64, max_size=3))
HEADERS = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["task", "id", "retries", "eta", "expires", "timelimit", "argsrepr"]),
        HEADER_VALUES,
        max_size=6,
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)),
    content_type=CONTENT_TYPES,
    headers=HEADERS,
)
def test_any_malformed_message_is_rejected_once_and_good_tasks_flow(
    target: Target, body: bytes, content_type: str | None, headers: dict[str, Any] | None
) -> None:
    logged = publish_then_a_good_task(
        target, Shape(body, headers=headers, content_type=content_type)
    )
    assert len([e for e in logged if e["event"] == "message_rejected"]) == 1
    assert target.worker.proc.poll() is None
