"""The task API: an `App` registers tasks; tasks are sent as Celery protocol 2 messages.

    app = App("proj")

    @app.task(acks_late=True, max_retries=5)
    def add(x, y):
        return x + y

    add.delay(2, 3).get(timeout=10)

With no broker given, the app reads bootkit's configuration (``--broker``,
``BOOTKIT_BROKER``, ``bootkit.toml``), so a client and ``bootkit start`` meet on the
same broker, the embedded filesystem one by default.
"""

from __future__ import annotations

import contextvars
import importlib
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar, overload

from bootkit import ConfigError
from bootkit_amqp_consumer.errors import MaxRetriesExceededError, Retry, TaskNotRegisteredError

P = ParamSpec("P")
R = TypeVar("R")

# What a running task sees as ``self.request``; set by the runner around each call.
current_request: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "bootkit_task_request"
)


class Task(Generic[P, R]):
    """A registered task; call it to run locally, `delay`/`apply_async` to send it."""

    def __init__(
        self,
        app: App,
        fn: Callable[..., R],
        *,
        name: str,
        bind: bool,
        acks_late: bool | None,
        max_retries: int | None,
        default_retry_delay: float,
        soft_time_limit: float | None,
        time_limit: float | None,
        ignore_result: bool,
        rate_limit: str | float | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.bind = bind
        self.acks_late = acks_late
        self.max_retries = max_retries
        self.default_retry_delay = default_retry_delay
        self.soft_time_limit = soft_time_limit
        self.time_limit = time_limit
        self.ignore_result = ignore_result
        self.rate_limit = rate_limit  # "10/s", "100/m", "1000/h" or per second; None: none
        self.__doc__ = fn.__doc__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @property
    def request(self) -> Mapping[str, Any]:
        """The message being executed: id, retries, eta, ... (empty outside a worker)."""
        return current_request.get({})

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Send the task with these arguments; returns an `AsyncResult`."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: datetime | float | None = None,
        queue: str | None = None,
        task_id: str | None = None,
    ) -> Any:
        """Send the task; returns an `AsyncResult`."""
        return self.app.send_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            task_id=task_id,
            time_limit=self.time_limit,
            soft_time_limit=self.soft_time_limit,
            ignore_result=self.ignore_result,
        )

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Ask the worker to run this task again later (raises `Retry`).

        Raises:
            Retry: always, while retries remain; the worker sends the task again.
            MaxRetriesExceededError: (or `exc`) when the retries are used up.
        """
        limit = self.max_retries if max_retries is None else max_retries
        retries = int(self.request.get("retries", 0))
        if limit is not None and retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"task {self.name}[{self.request.get('id')}] gave up after {retries} retries"
            )
        raise Retry(self.default_retry_delay if countdown is None else countdown, exc)


class App:
    """A registry of tasks plus the means to send them and read their results."""

    def __init__(
        self,
        name: str = "bootkit",
        *,
        broker: str | None = None,
        result_backend: str | None = None,
        transport_options: Mapping[str, object] | None = None,
        default_queue: str = "celery",
    ) -> None:
        self.name = name
        self.tasks: dict[str, Task[Any, Any]] = {}
        # (name, schedule, task name, args, kwargs): run by bootkit-beat (`bootkit start -B`).
        self.periodic: list[tuple[str, Any, str, tuple[Any, ...], dict[str, Any]]] = []
        self.default_queue = default_queue
        self._broker = broker
        self._backend_url = result_backend
        self._transport_options = dict(transport_options or {})
        self._local = threading.local()
        self._backend: Any = None
        self._lock = threading.Lock()
        from bootkit_amqp_consumer import builtins

        builtins.register(self)

    def configure(
        self,
        *,
        broker: str,
        result_backend: str | None,
        transport_options: Mapping[str, object] | None = None,
    ) -> None:
        """Point the app at a broker and backend (the worker does this with its own)."""
        self._broker = broker
        self._backend_url = result_backend
        self._transport_options = dict(transport_options or {})
        self._backend = None

    @overload
    def task(self, fn: Callable[P, R]) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        bind: bool = False,
        acks_late: bool | None = None,
        max_retries: int | None = 3,
        default_retry_delay: float = 180.0,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        ignore_result: bool = False,
        rate_limit: str | float | None = None,
    ) -> Callable[[Callable[..., R]], Task[Any, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        bind: bool = False,
        acks_late: bool | None = None,
        max_retries: int | None = 3,
        default_retry_delay: float = 180.0,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        ignore_result: bool = False,
        rate_limit: str | float | None = None,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True)``."""

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = Task(
                self,
                func,
                name=name or f"{func.__module__}.{func.__qualname__}",
                bind=bind,
                acks_late=acks_late,
                max_retries=max_retries,
                default_retry_delay=default_retry_delay,
                soft_time_limit=soft_time_limit,
                time_limit=time_limit,
                ignore_result=ignore_result,
                rate_limit=rate_limit,
            )
            self.tasks[task.name] = task
            return task

        return register(fn) if fn is not None else register

    def add_periodic_task(
        self,
        schedule: Any,
        task: str | Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Run `task` on `schedule` when a worker runs beat (``-B``): seconds, an interval
        string ("30s", "5m"), a cron string ("0 7 * * mon") or ``bootkit_beat.crontab(...)``.
        `name` (default: the task's name) must be unique among periodic tasks."""
        task_name = task if isinstance(task, str) else task.name
        entry_name = name or task_name
        if any(existing[0] == entry_name for existing in self.periodic):
            raise ValueError(f"a periodic task named {entry_name!r} exists; pass name=...")
        self.periodic.append((entry_name, schedule, task_name, tuple(args), dict(kwargs or {})))

    def get(self, name: str) -> Task[Any, Any]:
        """Raises: TaskNotRegisteredError."""
        try:
            return self.tasks[name]
        except KeyError:
            raise TaskNotRegisteredError(
                f"task {name!r} is not registered with app {self.name!r}"
            ) from None

    # -- sending -----------------------------------------------------------------

    def _resolve(self) -> None:
        if self._broker is not None:
            return
        from bootkit.config import Sources, build_settings
        from bootkit_amqp_consumer.options import OPTIONS, WorkerConfig

        config = WorkerConfig.from_settings(build_settings(Sources.read(), {}, OPTIONS))
        self.configure(
            broker=config.broker,
            result_backend=config.result_backend,
            transport_options=config.transport_options,
        )

    def connection(self) -> Any:
        """A kombu connection for this thread and process (a forked child gets its own)."""
        self._resolve()
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            from kombu.connection import Connection

            conn = Connection(self._broker, transport_options=self._transport_options)
            self._local.conn, self._local.pid = conn, os.getpid()
            self._local.producer = None
        return conn

    @property
    def backend(self) -> Any:
        """The result backend, or None when none is configured."""
        self._resolve()
        if self._backend is None and self._backend_url:
            from bootkit_amqp_consumer.backends import open_backend

            with self._lock:
                if self._backend is None:
                    self._backend = open_backend(self._backend_url)
        return self._backend

    def send_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: datetime | float | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        retries: int = 0,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        ignore_result: bool = False,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> Any:
        """Publish a task by name (it need not be registered here); returns an `AsyncResult`."""
        from kombu.entity import Exchange, Queue

        from bootkit_amqp_consumer.protocol import build
        from bootkit_amqp_consumer.results import AsyncResult

        task_id = task_id or str(uuid.uuid4())
        parent = current_request.get({})
        message = build(
            name,
            args,
            kwargs or {},
            task_id=task_id,
            countdown=countdown,
            eta=eta,
            expires=expires,
            retries=retries,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            ignore_result=ignore_result,
            root_id=root_id or parent.get("root_id"),
            parent_id=parent_id or parent.get("id"),
        )
        queue_name = queue or self.default_queue
        target = Queue(queue_name, Exchange(queue_name, "direct"), routing_key=queue_name)
        conn = self.connection()
        producer = getattr(self._local, "producer", None)
        if producer is None:
            producer = conn.Producer()
            self._local.producer = producer
        producer.publish(
            message.body,
            exchange="",
            routing_key=queue_name,
            serializer="json",
            headers=message.headers,
            declare=[target],
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2},
            **message.properties,
        )
        return AsyncResult(task_id, self.backend)

    def revoke(
        self, task_id: str | Sequence[str], *, terminate: bool = False, signal: str = "SIGTERM"
    ) -> None:
        """Tell every worker not to run these tasks (a no-op for ones already done);
        `terminate` also kills them where they run, on workers that allow it."""
        from bootkit_amqp_consumer.pidbox import broadcast

        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        arguments = {"task_id": ids, "terminate": terminate, "signal": signal}
        broadcast(self.connection(), "revoke", arguments)

    def AsyncResult(self, task_id: str) -> Any:  # noqa: N802 - the name Celery users know
        """The result of `task_id` from this app's backend."""
        from bootkit_amqp_consumer.results import AsyncResult

        return AsyncResult(task_id, self.backend)

    def close(self) -> None:
        """Close this thread's broker connection and the backend."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.release()
            self._local.conn = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def load_app(spec: str) -> App:
    """Import ``MODULE:ATTRIBUTE`` (or ``MODULE``, taking its ``app``) and return the App.

    Raises:
        ConfigError: the module does not import or holds no App there.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"-A {spec}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise ConfigError(
            f"-A {spec}: {module_name}.{attribute or 'app'} is {type(app).__name__}, not an App; "
            "point -A at MODULE:APP"
        )
    return app
