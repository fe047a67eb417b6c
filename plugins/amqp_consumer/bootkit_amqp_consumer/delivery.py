"""A task message as the consumer holds it, from its receipt to its ack."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bootkit_amqp_consumer.app import App, Task
from bootkit_amqp_consumer.errors import BadMessageError
from bootkit_amqp_consumer.job import Job
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.protocol import TaskRequest, decode
from bootkit_amqp_consumer.state import WorkerState


@dataclass(slots=True)
class Delivery:
    """A received task message and what became of it."""

    request: TaskRequest
    message: Any
    acks_late: bool
    received: float = field(default_factory=time.monotonic)
    started_at: float | None = None  # unix time the pool got it
    eta: datetime | None = None  # held by the timer until then
    acked: bool = False

    def stale(self, state: WorkerState) -> str | None:
        """Why it is not to run: "revoked" or "expired"; None: it may run."""
        if state.is_revoked(self.request.id):
            return "revoked"
        if self.request.expires is not None and self.request.expired(datetime.now(UTC)):
            return "expired"
        return None

    def job(self, task: Task[Any, Any], hostname: str) -> Job:
        """What the pool runs for this message; its own time limits win over `task`'s."""
        request = self.request
        return Job(
            request.id,
            request.name,
            request.args,
            request.kwargs,
            soft_time_limit=request.soft_time_limit or task.soft_time_limit,
            time_limit=request.time_limit or task.time_limit,
            context={
                "id": request.id,
                "retries": request.retries,
                "root_id": request.root_id,
                "parent_id": request.parent_id,
                "hostname": hostname,
                "delivery_info": dict(self.message.delivery_info or {}),
            },
        )

    def info(self, hostname: str, worker_pid: int | None = None) -> dict[str, Any]:
        """As Celery's inspect replies describe a request."""
        request, info = self.request, self.message.delivery_info or {}
        return {
            "id": request.id,
            "name": request.name,
            "args": list(request.args),
            "kwargs": request.kwargs,
            "type": request.name,
            "hostname": hostname,
            "time_start": self.started_at,
            "acknowledged": self.acked,
            "delivery_info": {
                "exchange": info.get("exchange"),
                "routing_key": info.get("routing_key"),
                "priority": (self.message.properties or {}).get("priority"),
                "redelivered": info.get("redelivered", False),
            },
            "worker_pid": worker_pid,
        }

    def scheduled_info(self, hostname: str, worker_pid: int | None = None) -> dict[str, Any]:
        """As Celery's ``inspect scheduled`` describes a task held for its ETA."""
        return {
            "eta": self.eta.isoformat() if self.eta else None,
            "priority": (self.message.properties or {}).get("priority"),
            "request": self.info(hostname, worker_pid),
        }


def receive(message: Any, app: App, config: WorkerConfig) -> Delivery:
    """The task message `message`, to run here.

    Raises:
        BadMessageError: it cannot be decoded, is refused by content type or size, or
            names a task not registered here (then with the task's id); anything else
            wrong with the message is ``malformed``.
    """
    try:
        request = decode(
            message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=message.headers,
            properties=message.properties,
            accept=config.accept_content,
            max_size=config.max_message_size,
        )
    except BadMessageError:
        raise
    except Exception as exc:  # anything else about a message is still the message's fault
        raise BadMessageError("malformed", f"{type(exc).__name__}: {exc}") from exc
    task = app.tasks.get(request.name)
    if task is None:
        detail = f"task {request.name!r} is not registered"
        raise BadMessageError("unknown_task", detail, task_id=request.id)
    acks_late = config.acks_late if task.acks_late is None else task.acks_late
    return Delivery(request, message, acks_late)
