"""The lines a consumer logs about each task: received, succeeded, retried (at info),
failed (at warning). At a level above info a task costs no line's fields."""

from __future__ import annotations

import logging
from typing import Any

from bootkit_amqp_consumer.job import Outcome
from bootkit_amqp_consumer.protocol import TaskRequest


class TaskLog:
    def __init__(self, log: Any) -> None:
        self.log = log
        self.info = log.is_enabled_for(logging.INFO)

    def received(self, request: TaskRequest) -> None:
        if self.info:
            self.log.info("task_received", task=request.name, task_id=request.id)

    def ended(self, request: TaskRequest, outcome: Outcome) -> None:
        if outcome.state == "FAILURE":
            self.log.warning(
                "task_failed",
                exc_type=outcome.exc_type,
                exc=outcome.exc_message,
                **_fields(request, outcome),
            )
        elif not self.info:
            return
        elif outcome.state == "RETRY":
            self.log.info("task_retried", countdown=outcome.countdown, **_fields(request, outcome))
        else:
            self.log.info("task_succeeded", **_fields(request, outcome))


def _fields(request: TaskRequest, outcome: Outcome) -> dict[str, Any]:
    return {"task": request.name, "task_id": request.id, "runtime": round(outcome.runtime, 6)}
