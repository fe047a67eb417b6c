"""The runner: executes one `Job` with the app's task and reports an `Outcome`.

It runs wherever the pool runs it (the consumer's thread, a pool thread, a child
process), so it touches nothing but the task registry.
"""

from __future__ import annotations

import time
import traceback

from bootkit_amqp_consumer.app import App, current_request
from bootkit_amqp_consumer.errors import Retry
from bootkit_amqp_consumer.job import Job, Outcome
from bootkit_amqp_consumer.pools import Runner


def make_runner(app: App) -> Runner:
    """A runner bound to `app`'s tasks."""

    def run(job: Job) -> Outcome:
        began = time.perf_counter()
        token = current_request.set(job.context)
        try:
            value = app.get(job.name)(*job.args, **job.kwargs)
        except Retry as retry:
            return Outcome(
                job.id,
                "RETRY",
                runtime=time.perf_counter() - began,
                countdown=retry.countdown,
                exc_message=repr(retry.exc) if retry.exc else None,
            )
        except BaseException as exc:  # a task's failure, whatever it raised, is its result
            return failure(job.id, exc, time.perf_counter() - began)
        finally:
            current_request.reset(token)
        return Outcome(job.id, "SUCCESS", result=value, runtime=time.perf_counter() - began)

    return run


def failure(job_id: str, exc: BaseException, runtime: float) -> Outcome:
    """A FAILURE outcome describing `exc` in Celery's terms."""
    return Outcome(
        job_id,
        "FAILURE",
        runtime=runtime,
        exc_type=type(exc).__name__,
        exc_module=type(exc).__module__,
        exc_message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )
