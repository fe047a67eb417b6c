"""The worker's counters as Prometheus metric families, built on each scrape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bootkit_amqp_consumer.pools import Pool
from bootkit_amqp_consumer.state import Runtimes, WorkerState
from bootkit_metrics.plugin import StepBook


class WorkerCollector:
    """Turns the worker's state and the step book into metric families on each scrape."""

    def __init__(self, state: WorkerState, pool: Pool, book: StepBook) -> None:
        self.state = state
        self.pool = pool
        self.book = book

    def collect(self) -> Iterator[Metric]:
        state = self.state
        # With children consuming for themselves (pool_children), what they count.
        told = self.pool.gather() if getattr(self.pool, "consumes", False) else None  # type: ignore[attr-defined]
        total, rejected_by = Counter(state.total), Counter(state.rejected)
        processed = Counter(state.processed)
        runtimes = state.runtimes
        if told is not None:
            runtimes = Runtimes()
            for report in told:
                total.update(report["total"])
                rejected_by.update(report["rejected"])
                processed["revoked"] += report["revoked"]
                theirs = report["runtimes"]
                runtimes.counts = [
                    a + b for a, b in zip(runtimes.counts, theirs["counts"], strict=True)
                ]
                runtimes.total += theirs["total"]
                runtimes.count += theirs["count"]
        received = CounterMetricFamily(
            "bootkit_tasks_received", "Task messages accepted, by task name.", labels=["task"]
        )
        for task, count in sorted(total.items()):
            received.add_metric([task], count)
        yield received
        for outcome, key in (
            ("succeeded", "success"),
            ("failed", "failure"),
            ("retried", "retry"),
            ("revoked", "revoked"),
        ):
            yield CounterMetricFamily(
                f"bootkit_tasks_{outcome}", f"Tasks {outcome}.", value=processed[key]
            )
        rejected = CounterMetricFamily(
            "bootkit_messages_rejected", "Messages rejected, by reason.", labels=["reason"]
        )
        for reason, count in sorted(rejected_by.items()):
            rejected.add_metric([reason], count)
        yield rejected
        cumulative, buckets = 0, []
        for bound, count in zip(runtimes.bounds, runtimes.counts, strict=False):
            cumulative += count
            buckets.append((_bound(bound), cumulative))
        buckets.append(("+Inf", runtimes.count))
        yield HistogramMetricFamily(
            "bootkit_task_runtime_seconds",
            "Time tasks ran, in seconds.",
            buckets=buckets,
            sum_value=runtimes.total,
        )
        consumer: Any = state.consumer
        if told is not None:
            counts = [sum(len(r[key]) for r in told) for key in ("active", "reserved", "scheduled")]
            prefetch = sum(r["prefetch_count"] or 0 for r in told)
        else:
            counts = [
                len(consumer.running) if consumer else 0,
                len(consumer.reserved) if consumer else 0,
                len(consumer.holds.tasks) if consumer else 0,
            ]
            prefetch = consumer.qos.value if consumer is not None and consumer.qos else 0
        for name, value, what in zip(
            ("active", "reserved", "scheduled"),
            counts,
            ("running now", "waiting for a slot", "held for ETA or rate"),
            strict=True,
        ):
            yield GaugeMetricFamily(f"bootkit_tasks_{name}", f"Tasks {what}.", value=value)
        yield GaugeMetricFamily("bootkit_prefetch_count", "Prefetch (QoS) limit.", value=prefetch)
        yield GaugeMetricFamily("bootkit_pool_size", "Pool slots.", value=self.pool.size)
        seconds = GaugeMetricFamily(
            "bootkit_step_seconds",
            "Seconds each step took to start or stop, last time.",
            labels=["blueprint", "step", "phase"],
        )
        states = GaugeMetricFamily(
            "bootkit_step_state",
            "1 for each step's current state.",
            labels=["blueprint", "step", "state"],
        )
        with self.book.lock:
            for (blueprint, step, phase), took in sorted(self.book.seconds.items()):
                seconds.add_metric([blueprint, step, phase], took)
            for (blueprint, step), now in sorted(self.book.states.items()):
                states.add_metric([blueprint, step, now], 1)
        yield seconds
        yield states


def _bound(value: float) -> str:
    return f"{value:g}"
