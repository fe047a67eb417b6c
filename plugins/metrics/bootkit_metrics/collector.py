"""The worker's counters as Prometheus metric families, built on each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bootkit_amqp_consumer.pools import Pool
from bootkit_amqp_consumer.state import WorkerState
from bootkit_metrics.plugin import StepBook


class WorkerCollector:
    """Turns the worker's state and the step book into metric families on each scrape."""

    def __init__(self, state: WorkerState, pool: Pool, book: StepBook) -> None:
        self.state = state
        self.pool = pool
        self.book = book

    def collect(self) -> Iterator[Metric]:
        state = self.state
        received = CounterMetricFamily(
            "bootkit_tasks_received", "Task messages accepted, by task name.", labels=["task"]
        )
        for task, count in sorted(state.total.items()):
            received.add_metric([task], count)
        yield received
        for outcome, key in (
            ("succeeded", "success"),
            ("failed", "failure"),
            ("retried", "retry"),
            ("revoked", "revoked"),
        ):
            yield CounterMetricFamily(
                f"bootkit_tasks_{outcome}", f"Tasks {outcome}.", value=state.processed[key]
            )
        rejected = CounterMetricFamily(
            "bootkit_messages_rejected", "Messages rejected, by reason.", labels=["reason"]
        )
        for reason, count in sorted(state.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        runtimes = state.runtimes
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
        for name, value, what in (
            ("active", len(consumer.running) if consumer else 0, "running now"),
            ("reserved", len(consumer.reserved) if consumer else 0, "waiting for a slot"),
            ("scheduled", len(consumer.scheduled) if consumer else 0, "held for ETA or rate"),
        ):
            yield GaugeMetricFamily(f"bootkit_tasks_{name}", f"Tasks {what}.", value=value)
        prefetch = consumer.qos.value if consumer is not None and consumer.qos else 0
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
