"""The consumer against a real RabbitMQ whose connection fails under it: a task whose
early ack never reached the broker never started, so its redelivery runs."""

from __future__ import annotations

import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.consumer import TaskConsumer
from bootkit_amqp_consumer.errors import BrokerConnectionLostError
from bootkit_amqp_consumer.execution import make_runner
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pools import SoloPool
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.timer import Timer
from test_transport import AMQP_URL, connect

TIMEOUT = 10.0  # every wait below gives up after this long


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"test-lost-{uuid.uuid4().hex[:8]}"
    yield name
    conn = connect()
    try:
        conn.default_channel.queue_delete(name)
    finally:
        conn.release()


def config(queue: str, tmp_path: Path) -> WorkerConfig:
    return WorkerConfig(
        app=None,
        broker=AMQP_URL,
        transport_options={},
        result_backend=None,
        queues=(queue,),
        concurrency=1,
        pool="solo",
        hostname="lost@test",
        prefetch_multiplier=4,
        acks_late=False,
        accept_content=frozenset({"application/json"}),
        max_message_size=1 << 20,
        max_redeliveries=3,
        state_dir=tmp_path,
    )


def consumer_for(app: App, cfg: WorkerConfig, state: WorkerState, timer: Timer) -> Any:
    """A declared consumer on a connection of its own."""
    connection = connect(AMQP_URL)
    consumer = TaskConsumer(
        app=app,
        config=cfg,
        pool=SoloPool(make_runner(app)),
        timer=timer,
        backend=None,
        state=state,
        connection=connection,
    )
    consumer.declare()
    return consumer


def run(consumer: TaskConsumer) -> tuple[threading.Thread, list[BaseException]]:
    """The consumer's loop, in a thread of its own; what it raised, once it ends."""
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread, failures


def test_a_task_whose_early_ack_could_not_be_sent_runs_when_redelivered(
    queue_name: str, tmp_path: Path
) -> None:
    app = App("lost")
    ran: list[str] = []
    second_ran = threading.Event()
    first: dict[str, Any] = {}

    @app.task(name="lost.cut")
    def cut() -> None:
        # The worker's own socket fails while this task runs: the next task's ack,
        # sent before that task may start, cannot go out.
        ran.append("cut")
        transport = first["consumer"].connection.connection.transport
        deadline = time.monotonic() + TIMEOUT
        # Wait for the next delivery to be in (the loop is running this task, so it is
        # read only after): its frames in the socket or in the transport's buffer.
        while not (transport._buffer or select.select([transport.sock], [], [], 0.01)[0]):
            assert time.monotonic() < deadline, "the second delivery never came"
        transport.sock.shutdown(socket.SHUT_RDWR)

    @app.task(name="lost.second")
    def second() -> None:
        ran.append("second")
        second_ran.set()

    app.configure(broker=AMQP_URL, result_backend=None)
    for name in ("lost.cut", "lost.second"):
        app.send_task(name, queue=queue_name, task_id=f"id-{name}", ignore_result=True)
    app.close()
    state, timer = WorkerState(), Timer()
    timer.start()
    cfg = config(queue_name, tmp_path)
    try:
        consumer = first["consumer"] = consumer_for(app, cfg, state, timer)
        thread, failures = run(consumer)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the loop did not notice its connection fail"
        assert [type(f) for f in failures] == [BrokerConnectionLostError]
        consumer.close()
        consumer.connection.release()
        assert ran == ["cut"]

        # Reconnected, as the worker's consumer step does: the broker redelivers it.
        consumer = consumer_for(app, cfg, state, timer)
        thread, failures = run(consumer)
        try:
            assert second_ran.wait(TIMEOUT), "the task that never started was not run"
        finally:
            consumer.stop()
            thread.join(TIMEOUT)
            consumer.close()
            consumer.connection.release()
        assert not failures
        assert ran == ["cut", "second"], "the task that ran must not run again"
    finally:
        timer.stop()
