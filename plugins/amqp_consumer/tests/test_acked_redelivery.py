"""A broker's redelivery of a message this worker acknowledged (the ack lost with the
connection) is acknowledged again, never run; a retry with the same id still runs."""

from __future__ import annotations

from bootkit_amqp_consumer.state import WorkerState


def nothing(outcome: object) -> None:
    pass


def test_a_redelivery_of_an_acknowledged_message_is_done() -> None:
    state = WorkerState()
    state.acknowledged("t1", 0)
    assert state.adopt("t1", nothing, redelivered=True, retries=0) == "done"


def test_a_first_delivery_with_an_acknowledged_id_runs() -> None:
    state = WorkerState()
    state.acknowledged("t1", 0)
    assert state.adopt("t1", nothing, redelivered=False, retries=0) == ""


def test_a_redelivered_retry_of_an_acknowledged_try_runs() -> None:
    state = WorkerState()
    state.acknowledged("t1", 0)  # the first try's message, acked when it was retried
    assert state.adopt("t1", nothing, redelivered=True, retries=1) == ""
