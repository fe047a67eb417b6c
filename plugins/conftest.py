"""Every plugin's tests share the worker's end-to-end fixtures (defined in e2e_fixtures)."""

from e2e_fixtures import (
    broker,
    client,
    ledger,
    queue,
    rabbitmq_broker,
    redis_broker,
    results_redis,
    start_worker,
)

__all__ = [
    "broker",
    "client",
    "ledger",
    "queue",
    "rabbitmq_broker",
    "redis_broker",
    "results_redis",
    "start_worker",
]
