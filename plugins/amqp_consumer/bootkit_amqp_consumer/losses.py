"""What a task that ended with no outcome of its own records: one terminated where it
ran (revoked with ``terminate``), or one lost with the process that ran it. The same
for every pool: the consumer records them, and the prefork parent for a child that
consumed for itself. What becomes of the message (ack, requeue, reject) is the
caller's.
"""

from __future__ import annotations

from typing import Any

from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.state import WorkerState


def terminated(
    task_id: str,
    name: str,
    *,
    state: WorkerState,
    events: EventDispatcher | None,
    backend: Any,
    log: Any,
) -> None:
    """Counted and announced as revoked; its result is REVOKED (when kept: `backend`)."""
    state.processed["revoked"] += 1
    log.info("task_terminated", task=name, task_id=task_id)
    if events is not None and events.task_events:
        events.send("task-revoked", uuid=task_id, terminated=True, signum=None, expired=False)
    if backend is not None:
        try:
            backend.store_state(task_id, "REVOKED", reason="terminated")
        except Exception:
            log.exception("result_store_failed", task_id=task_id)


def lost(
    outcome: Outcome,
    name: str,
    *,
    acks_late: bool,
    max_redeliveries: int,
    state: WorkerState,
    events: EventDispatcher | None,
    backend: Any,
    log: Any,
) -> bool:
    """Count the loss and log it. True: requeue the task (late ack, lost no more than
    `max_redeliveries` times), its outcome is its next run's. Else the loss is its
    outcome: a failure, with its event and its result."""
    task_id = outcome.job_id
    with state.lock:
        state.lost[task_id] += 1
        times = state.lost[task_id]
    requeue = acks_late and times <= max_redeliveries
    log.error(
        "task_lost",
        task=name,
        task_id=task_id,
        error=outcome.exc_message,
        times=times,
        requeued=requeue,
    )
    state.processed["failure"] += 1
    if not requeue:
        failed(outcome, events=events, backend=backend, log=log)
    return requeue


def failed(outcome: Outcome, *, events: EventDispatcher | None, backend: Any, log: Any) -> None:
    """Announce `outcome`, a failure the task itself did not raise, and store it as the
    task's result (when kept: `backend`)."""
    if events is not None and events.task_events:
        events.task_ended(outcome.job_id, outcome)
    if backend is not None:
        try:
            backend.store_outcome(outcome)
        except Exception:
            log.exception("result_store_failed", task_id=outcome.job_id)
