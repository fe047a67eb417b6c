"""What a pool runs (`Job`) and what it reports back (`Outcome`): plain, picklable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeState = Literal["SUCCESS", "FAILURE", "RETRY"]

# Each task makes one of each, and of `protocol.TaskRequest`. None is changed once made,
# but none is frozen: a frozen dataclass sets every field through `object.__setattr__`,
# which tripled what building one cost.


@dataclass(slots=True)
class Job:
    """One task execution, handed to a pool.

    Attributes:
        id: the task id. name: the registered task name.
        soft_time_limit, time_limit: seconds, None for no limit (enforced by the
            process pool; the thread and solo pools cannot interrupt a task).
        context: what a bound task sees as ``self.request`` (id, retries, eta, ...).
    """

    id: str
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    soft_time_limit: float | None = None
    time_limit: float | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self) -> tuple[type[Job], tuple[Any, ...]]:
        # A plain tuple of fields pickles in a third of the time a dataclass takes,
        # and the prefork pool pickles every job.
        return Job, (
            self.id,
            self.name,
            self.args,
            self.kwargs,
            self.soft_time_limit,
            self.time_limit,
            self.context,
        )


@dataclass(slots=True)
class Outcome:
    """How a job ended.

    Attributes:
        state: SUCCESS (result holds the return value), FAILURE (exc_* and traceback
            describe the exception) or RETRY (countdown holds the delay).
        lost: the process running the job died (killed, ``os._exit``, hard time
            limit); the consumer decides whether to requeue or reject.
    """

    job_id: str
    state: OutcomeState
    result: Any = None
    runtime: float = 0.0
    exc_type: str | None = None
    exc_message: str | None = None
    exc_module: str | None = None
    traceback: str | None = None
    countdown: float | None = None
    lost: bool = False

    def __reduce__(self) -> tuple[type[Outcome], tuple[Any, ...]]:
        return Outcome, (
            self.job_id,
            self.state,
            self.result,
            self.runtime,
            self.exc_type,
            self.exc_message,
            self.exc_module,
            self.traceback,
            self.countdown,
            self.lost,
        )
