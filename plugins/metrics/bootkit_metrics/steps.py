"""``metrics.http``: serves ``/metrics`` from the worker's own counters, read when
scraped (`collector`), so the task path pays nothing for it but the runtime histogram."""

from __future__ import annotations

from bootkit import Condition, Context, Settings, Step, StopReason, logger
from bootkit_amqp_consumer.pools import Pool
from bootkit_amqp_consumer.state import WorkerState
from bootkit_metrics.plugin import BOOK


class MetricsHTTP(Step):
    """Serves Prometheus metrics on ``--metrics-port`` (off when unset)."""

    name = "metrics.http"
    blueprint = "worker"
    requires = ("amqp.app", "amqp.pool")

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        if settings.option("metrics_port") is None:
            return Condition.off("metrics_port is not set")
        return Condition.on()

    def start(self, ctx: Context) -> None:
        # Here, not at import: the step is installed in every worker, and mostly off.
        from prometheus_client import CollectorRegistry, start_http_server

        from bootkit_metrics.collector import WorkerCollector

        registry = CollectorRegistry()
        registry.register(WorkerCollector(ctx.get(WorkerState), ctx.get(Pool), BOOK))  # type: ignore[type-abstract]
        host = ctx.settings.option("metrics_host", "127.0.0.1")
        port = int(ctx.settings.option("metrics_port"))
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        logger().info("metrics_serving", url=f"http://{host}:{self.server.server_port}/metrics")

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
