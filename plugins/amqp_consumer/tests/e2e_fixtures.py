"""Fixtures of the worker's end-to-end tests: real brokers, real worker subprocesses.

Every plugin's tests use them: their conftest.py imports the fixtures by name.

A test that takes `broker` runs once on RabbitMQ and once on Redis; one that needs a
single broker says so with ``@pytest.mark.parametrize("broker", [...], indirect=True)``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from amqp.exceptions import NotAllowed  # type: ignore[import-untyped, unused-ignore]

from bootkit_amqp_consumer import App
from e2e_support import (
    AMQP_URL,
    REDIS_BROKER_URL,
    RESULTS_URL,
    VHOST,
    Broker,
    StartWorker,
    broker_unreachable,
    launch,
    stop,
    unique,
)
from e2e_tasks import make_app
from tests.support import Service


def _add_vhost() -> None:
    """Create the tests' RabbitMQ vhost (once per machine; needs rabbitmqctl, as root)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail(f"RabbitMQ has no vhost {VHOST!r} and rabbitmqctl is not on PATH to add it")
    for command in (
        ["add_vhost", VHOST],
        ["set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
    ):
        done = subprocess.run(
            [ctl, *command], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0 and "already_exists" not in done.stderr + done.stdout:
            pytest.fail(f"rabbitmqctl {' '.join(command)} failed: {done.stderr or done.stdout}")


@pytest.fixture(scope="session")
def results_redis() -> str:
    """The result backend's URL, once Redis answers there."""
    client = redis.Redis.from_url(RESULTS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        broker_unreachable("Redis", exc)
    finally:
        client.close()
    return RESULTS_URL


@pytest.fixture(scope="session")
def rabbitmq_broker(results_redis: str) -> Broker:
    broker = Broker("rabbitmq", AMQP_URL)
    try:
        broker.check()
    except NotAllowed:  # the vhost is missing
        _add_vhost()
        broker.check()
    except Exception as exc:
        broker_unreachable("RabbitMQ", exc)
    return broker


@pytest.fixture(scope="session")
def redis_broker(results_redis: str) -> Broker:
    broker = Broker("redis", REDIS_BROKER_URL)
    try:
        broker.check()
    except Exception as exc:
        broker_unreachable("Redis", exc)
    return broker


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request: pytest.FixtureRequest) -> Broker:
    found: Broker = request.getfixturevalue(f"{request.param}_broker")
    return found


@pytest.fixture
def queue(broker: Broker) -> Iterator[str]:
    """A queue of the test's own, deleted afterwards."""
    name = unique("e2e")
    yield name
    broker.delete(name)


@pytest.fixture
def client(broker: Broker, queue: str) -> Iterator[App]:
    """bootkit's own client, sending to the test's queue and reading results from Redis."""
    app = make_app("e2e-client", broker=broker.url, result_backend=RESULTS_URL, default_queue=queue)
    yield app
    app.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """The file the test's tasks note their starts and completions in."""
    return tmp_path / "ledger"


@pytest.fixture
def start_worker(tmp_path: Path, broker: Broker, queue: str) -> Iterator[StartWorker]:
    """Start workers on the test's queue; those still running afterwards are warm-stopped."""
    services: list[Service] = []

    def start(*extra: str, pool: str = "threads", concurrency: int = 2) -> Service:
        name = f"worker{len(services) + 1}"
        service = launch(
            tmp_path, broker, queue, *extra, pool=pool, concurrency=concurrency, name=name
        )
        services.append(service)
        return service

    yield start
    with contextlib.ExitStack() as stack:  # whatever fails, every worker is reaped
        for service in services:
            stack.enter_context(service)
        for service in services:
            stop(service)
