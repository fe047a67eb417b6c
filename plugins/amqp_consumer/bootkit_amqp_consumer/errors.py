"""Exceptions of the task worker and its client."""

from __future__ import annotations

from bootkit import BootkitError


class WorkerError(BootkitError):
    """Base of the worker's own errors."""


class BrokerConnectionLostError(ConnectionError):
    """The broker connection or channel failed; the consumer blueprint restarts."""


class TaskNotRegisteredError(WorkerError):
    """No task of that name is registered with the app."""


class BadMessageError(WorkerError):
    """A message that cannot be turned into a task request; it is rejected, never retried.

    Attributes:
        reason: a short, stable label for counters and logs (e.g. ``bad_json``).
        task_id: the task's id, when the message could be read that far.
    """

    def __init__(self, reason: str, detail: str, task_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.task_id = task_id


class SoftTimeLimitExceededError(Exception):
    """Raised inside a task when its soft time limit passes; the task may clean up."""


class TimeLimitExceededError(Exception):
    """The task ran past its hard time limit and its process was killed."""


class WorkerLostError(Exception):
    """The process running the task died before the task finished."""


class Retry(Exception):  # noqa: N818 - the name users raise, as in Celery
    """Raised by ``Task.retry``: the task is sent again after `countdown` seconds."""

    def __init__(self, countdown: float, exc: BaseException | None = None) -> None:
        super().__init__(f"retry in {countdown:g}s" + (f": {exc!r}" if exc else ""))
        self.countdown = countdown
        self.exc = exc


class MaxRetriesExceededError(Exception):
    """``Task.retry`` was called more times than the task's ``max_retries``."""


class ResultTimeoutError(WorkerError):
    """``AsyncResult.get`` gave up waiting for the result."""


class TaskFailedError(Exception):
    """`AsyncResult.get` re-raises this for a failure whose exception class is not loaded here.

    Attributes:
        exc_type, exc_module: the remote exception's class (qualified name) and module.
        message: its arguments as text. remote_traceback: the worker's traceback, if any.
    """

    def __init__(
        self,
        task_id: str,
        exc_type: str,
        exc_module: str,
        message: str,
        remote_traceback: str | None,
    ) -> None:
        super().__init__(
            f"task {task_id} failed with {exc_module}.{exc_type}: {message} "
            f"(import {exc_module} before get() to receive the original exception)"
        )
        self.task_id = task_id
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.message = message
        self.remote_traceback = remote_traceback


class TaskRevokedError(Exception):
    """`AsyncResult.get` raises this when the task was revoked (reason: revoked, expired, ...)."""


class Terminated(Exception):  # noqa: N818 - the outcome's exc_type, as the pool reports it
    """The task's process was terminated on request (revoke with terminate)."""
