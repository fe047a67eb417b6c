"""What a task that ends with no outcome of its own records: one revoked or expired
before it ran, one terminated where it ran (revoked with ``terminate``), or one lost
with the process that ran it. The same for every pool: the consumer records them, and
the prefork parent for a child that consumed for itself. What becomes of the message
(ack, requeue, reject) is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.state import WorkerState


@dataclass
class Losses:
    """Where such tasks are recorded: the worker's counters, its events (None: not
    sent) and its log."""

    state: WorkerState
    events: EventDispatcher | None
    log: Any

    def revoked(self, task_id: str, name: str, backend: Any, why: str) -> None:
        """Counted and announced as revoked, `why` being "revoked" or "expired" (before
        it ran) or "terminated" (where it ran); its result is REVOKED (when kept:
        `backend`)."""
        self.state.processed["revoked"] += 1
        if why == "terminated":
            self.log.info("task_terminated", task=name, task_id=task_id)
        else:
            self.log.info("task_revoked", task=name, task_id=task_id, why=why)
        if self.events is not None and self.events.task_events:
            self.events.send(
                "task-revoked",
                uuid=task_id,
                terminated=why == "terminated",
                signum=None,
                expired=why == "expired",
            )
        if backend is not None:
            try:
                backend.store_state(task_id, "REVOKED", reason=why)
            except Exception:
                self.log.exception("result_store_failed", task_id=task_id)

    def lost(
        self, outcome: Outcome, name: str, backend: Any, *, acks_late: bool, max_redeliveries: int
    ) -> bool:
        """Count the loss and log it. True: requeue the task (late ack, lost no more than
        `max_redeliveries` times), its outcome is its next run's. Else the loss is its
        outcome: a failure, with its event and its result."""
        task_id = outcome.job_id
        with self.state.lock:
            self.state.lost[task_id] += 1
            times = self.state.lost[task_id]
        requeue = acks_late and times <= max_redeliveries
        self.log.error(
            "task_lost",
            task=name,
            task_id=task_id,
            error=outcome.exc_message,
            times=times,
            requeued=requeue,
        )
        self.state.processed["failure"] += 1
        if not requeue:
            self.failed(outcome, backend)
        return requeue

    def failed(self, outcome: Outcome, backend: Any) -> None:
        """Announce `outcome`, a failure the task itself did not raise, and store it as
        the task's result (when kept: `backend`)."""
        if self.events is not None and self.events.task_events:
            self.events.task_ended(outcome.job_id, outcome)
        if backend is not None:
            try:
                backend.store_outcome(outcome)
            except Exception:
                self.log.exception("result_store_failed", task_id=outcome.job_id)
