"""Execution pools: solo (in the consumer's own thread), threads, and processes.

A pool runs `Job`s with a `Runner` and reports each `Outcome` to the `Done` callback
given with the job, from whichever thread finished it. `submit` never blocks: the
consumer bounds the jobs in flight by its prefetch count.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from bootkit import logger
from bootkit_amqp_consumer.job import Job, Outcome

if TYPE_CHECKING:
    from bootkit_amqp_consumer.keeper import Keeper

Runner = Callable[[Job], Outcome]
Done = Callable[[Outcome], None]


class Pool(Protocol):
    """What the consumer needs from a pool."""

    kind: str

    @property
    def size(self) -> int:
        """Jobs that can run at once."""
        ...

    def start(self) -> None:
        """Start workers; return once they can take jobs."""
        ...

    def submit(self, job: Job, done: Done) -> None:
        """Run `job`; call `done(outcome)` when it ends."""
        ...

    def stop(self, *, wait: bool = True) -> None:
        """Stop; with `wait`, let running jobs finish first (their `done` is called)."""
        ...

    def terminate(self, job_id: str, signum: int = signal.SIGTERM) -> bool:
        """Kill the running job `job_id` with `signum`; False when not running or not
        supported (only processes can be killed)."""
        ...

    def grow(self, n: int) -> None:
        """Add `n` workers."""
        ...

    def shrink(self, n: int) -> None:
        """Remove `n` workers (never below one), once they are idle."""
        ...

    def active(self) -> list[str]:
        """Ids of the jobs running now."""
        ...

    def watch(self) -> list[int]:
        """File descriptors the caller's own event loop watches for outcomes from now
        on, passing the readable ones to `collect`; [] when the pool reports by itself."""
        ...

    def collect(self, ready: Collection[int]) -> None:
        """Report the outcomes waiting behind `ready` (from `watch`), in this thread."""
        ...

    def unwatch(self) -> None:
        """The caller stops watching: the pool reports outcomes by itself again."""
        ...


class Reporting:
    """For pools that always report outcomes by themselves (their own threads)."""

    def watch(self) -> list[int]:
        return []

    def collect(self, ready: Collection[int]) -> None:
        pass

    def unwatch(self) -> None:
        pass


class SoloPool(Reporting):
    """Runs each job at once in the caller's thread (the consumer's): no handoff at all.
    With a `keeper` (AMQP brokers), the consumer is kept while a job runs: see keeper."""

    kind = "solo"

    def __init__(self, runner: Runner, keeper: Keeper | None = None) -> None:
        self.runner = runner
        self.keeper = keeper
        self.consumer: Any = None  # the TaskConsumer that submits here (it says so)
        self._running: str | None = None

    @property
    def size(self) -> int:
        return 1

    def start(self) -> None:
        if self.keeper is not None:
            self.keeper.start()

    def submit(self, job: Job, done: Done) -> None:
        consumer = self.consumer if self.keeper is not None else None
        self._running = job.id
        try:
            if consumer is None:
                outcome = self.execute(job)
            else:
                assert self.keeper is not None
                outcome = self.keeper.run(consumer, lambda: self.execute(job))
        finally:
            self._running = None
        report_outcome(done, outcome)
        if consumer is not None:
            consumer.resume()  # if the keeper handed back: once the outcome is reported

    def execute(self, job: Job) -> Outcome:
        """Run `job` here (the loop's thread)."""
        return self.runner(job)

    def stop(self, *, wait: bool = True) -> None:
        pass

    def terminate(self, job_id: str, signum: int = signal.SIGTERM) -> bool:
        return False

    def grow(self, n: int) -> None:
        raise ValueError("the solo pool has exactly one slot; use -P threads or prefork")

    def shrink(self, n: int) -> None:
        raise ValueError("the solo pool has exactly one slot; use -P threads or prefork")

    def active(self) -> list[str]:
        return [self._running] if self._running else []


_STOP = None


class _Local(threading.local):
    free = False  # the thread reports an outcome: what it is handed now, it runs next
    next: tuple[Job, Done] | None = None


class ThreadPool(Reporting):
    """N threads taking jobs from one queue.

    A job submitted by a pool thread while it reports its outcome (the consumer hands
    out the next task in the loop's turn) is kept by that thread and run next, with
    no hand-off through the queue to another thread; one job a report, the rest queue.
    """

    kind = "threads"

    def __init__(self, runner: Runner, size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one slot, got {size}")
        self.runner = runner
        self._wanted = size
        self._queue: queue.SimpleQueue[tuple[Job, Done] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, str] = {}
        self._lock = threading.Lock()
        self._local = _Local()

    @property
    def size(self) -> int:
        return self._wanted

    def start(self) -> None:
        self._spawn(self._wanted)

    def _spawn(self, n: int) -> None:
        for _ in range(n):
            thread = threading.Thread(
                target=self._work, name=f"bootkit-pool-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        ident = threading.get_ident()
        local = self._local
        item: tuple[Job, Done] | None = None
        while True:
            if item is None:
                item = self._queue.get()
                if item is _STOP:
                    return
            job, done = item
            with self._lock:
                self._running[ident] = job.id
            try:
                outcome = self.runner(job)
            finally:
                with self._lock:
                    self._running.pop(ident, None)
            local.free = True  # a job submitted while the outcome is reported runs here next
            try:
                report_outcome(done, outcome)
            finally:
                local.free = False
            item, local.next = local.next, None

    def submit(self, job: Job, done: Done) -> None:
        local = self._local
        if getattr(local, "free", False) and local.next is None:
            local.next = (job, done)  # this pool thread is done with its job: no hand-off
        else:
            self._queue.put((job, done))

    def stop(self, *, wait: bool = True) -> None:
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()

    def terminate(self, job_id: str, signum: int = signal.SIGTERM) -> bool:
        return False

    def grow(self, n: int) -> None:
        with self._lock:
            self._wanted += n
        self._spawn(n)

    def shrink(self, n: int) -> None:
        with self._lock:
            n = min(n, self._wanted - 1)
            self._wanted -= n
        for _ in range(n):
            self._queue.put(_STOP)

    def active(self) -> list[str]:
        with self._lock:
            return list(self._running.values())


def report_outcome(done: Done, outcome: Outcome) -> None:
    """Hand `outcome` over; a failing callback is logged and never takes the slot with it."""
    try:
        done(outcome)
    except Exception:
        logger().exception("pool_done_callback_failed", job_id=outcome.job_id)
