"""The reliability suite's ledger: confirmed publishes, a per-task record of starts and
completions kept outside the worker, and a checker that counts what was lost or
done twice.

Every task gets a unique tag; `publish` sends `WORK_LATE` tasks with publisher
confirms (RabbitMQ) so a publish that returns reached the broker; the tasks append
``start TAG`` and ``done TAG`` lines to the ledger file (see e2e_tasks); `check`
compares. Each report is printed as one line, ``[row] published=... lost=...``, so the
suite's output is the table of docs/reliability.md.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kombu.connection import Connection

from bootkit_amqp_consumer.protocol import build
from e2e_support import Broker
from e2e_tasks import WORK_LATE, read_ledger


@dataclass(frozen=True)
class Report:
    """What the ledger says about the tasks published."""

    published: int
    completed: int
    lost: int  # published and confirmed, never completed
    duplicate_starts: int  # starts beyond the first, over all tasks
    duplicate_completions: int  # completions beyond the first
    unexpected: int  # completed, never published

    def line(self, row: str, **figures: float) -> str:
        extra = "".join(f" {k}={v:.2f}" for k, v in figures.items())
        return (
            f"[{row}] published={self.published} completed={self.completed} lost={self.lost} "
            f"duplicate_starts={self.duplicate_starts} "
            f"duplicate_completions={self.duplicate_completions}{extra}"
        )


def publish(broker: Broker, queue: str, ledger: Path, count: int, seconds: float) -> list[str]:
    """Send `count` late-ack tasks that take `seconds`; each returns only once confirmed."""
    tags = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    options = {"confirm_publish": True} if broker.kind == "rabbitmq" else {}
    with Connection(broker.url, transport_options=options, connect_timeout=4) as connection:
        producer = connection.Producer()
        for tag in tags:
            message = build(WORK_LATE, [str(ledger), tag, seconds], {}, task_id=str(uuid.uuid4()))
            producer.publish(
                message.body,
                exchange="",
                routing_key=queue,
                serializer="json",
                headers=message.headers,
                retry=True,
                **message.properties,
            )
    return tags


def completed(ledger: Path, tags: list[str]) -> int:
    done = {e.tag for e in read_ledger(ledger) if e.event == "done"}
    return len(done & set(tags))


def check(ledger: Path, tags: list[str]) -> Report:
    published = set(tags)
    entries = read_ledger(ledger)
    starts = Counter(e.tag for e in entries if e.event == "start" and e.tag in published)
    dones = Counter(e.tag for e in entries if e.event == "done")
    return Report(
        published=len(tags),
        completed=len(set(dones) & published),
        lost=len(published - set(dones)),
        duplicate_starts=sum(n - 1 for n in starts.values() if n > 1),
        duplicate_completions=sum(n - 1 for n in dones.values() if n > 1),
        unexpected=len(set(dones) - published),
    )
