"""bootkit-amqp-consumer: the reference task worker, Celery's protocol over kombu."""

from bootkit_amqp_consumer.app import App, Task
from bootkit_amqp_consumer.errors import (
    MaxRetriesExceededError,
    ResultTimeoutError,
    Retry,
    SoftTimeLimitExceededError,
    TaskFailedError,
    TaskNotRegisteredError,
    TaskRevokedError,
    TimeLimitExceededError,
    WorkerLostError,
)

__all__ = [
    "App",
    "MaxRetriesExceededError",
    "ResultTimeoutError",
    "Retry",
    "SoftTimeLimitExceededError",
    "Task",
    "TaskFailedError",
    "TaskNotRegisteredError",
    "TaskRevokedError",
    "TimeLimitExceededError",
    "WorkerLostError",
]
