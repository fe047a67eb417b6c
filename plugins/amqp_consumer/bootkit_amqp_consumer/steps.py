"""The worker's steps: blueprint ``worker`` (app, timer, results, pool, consumer) and
blueprint ``consumer`` (connection, events, tasks, control, loop), which the worker
restarts on connection loss with backoff.

The consumer's broker connection is used by one thread at a time: steps that use it
(``amqp.tasks``, ``control.pidbox``, and other plugins' such as mingle and gossip) are
ordered one after another, and once ``amqp.loop`` runs only the thread holding the
loop's turn touches it (see `consumer`).
The events dispatcher has a connection of its own.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from bootkit import BlueprintStep, Context, Step, StopReason
from bootkit_amqp_consumer.app import App, load_app
from bootkit_amqp_consumer.control import Commands
from bootkit_amqp_consumer.errors import BrokerConnectionLostError
from bootkit_amqp_consumer.execution import make_runner
from bootkit_amqp_consumer.keeper import Keeper
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pools import Pool, SoloPool, ThreadPool
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.timer import Timer

if TYPE_CHECKING:
    from bootkit_amqp_consumer.consumer import TaskConsumer


class Results:
    """The result backend, or None when results are not kept."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend


class Connection:
    """The consumer blueprint's broker connection (a kombu ``Connection``)."""

    def __init__(self, kombu_connection: Any) -> None:
        self.kombu = kombu_connection


class AppStep(Step):
    """Loads the task app named by ``-A`` and the worker's configuration."""

    name = "amqp.app"
    blueprint = "worker"

    def start(self, ctx: Context) -> None:
        config = WorkerConfig.from_settings(ctx.settings)
        app = load_app(config.app) if config.app else App("bootkit")
        app.configure(
            broker=config.broker,
            result_backend=config.result_backend,
            transport_options=config.transport_options,
        )
        ctx.provide(WorkerConfig, config)
        ctx.provide(App, app)
        ctx.provide(WorkerState, WorkerState(task_events=config.task_events))
        ctx.provide(Commands, Commands())

    def stop(self, ctx: Context, reason: StopReason) -> None:
        app = ctx.find(App)
        if app is not None:
            app.close()


class TimerStep(Step):
    """The timer that holds ETA tasks and runs periodic work."""

    name = "amqp.timer"
    blueprint = "worker"

    def start(self, ctx: Context) -> None:
        self.timer = Timer()
        self.timer.start()
        ctx.provide(Timer, self.timer)

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.timer.stop()


class ResultsStep(Step):
    """Opens the result backend, when one is configured."""

    name = "amqp.results"
    blueprint = "worker"
    requires = ("amqp.app",)

    def start(self, ctx: Context) -> None:
        ctx.provide(Results, Results(ctx.get(App).backend))

    def stop(self, ctx: Context, reason: StopReason) -> None:
        pass  # the app closes its backend


class PoolStep(Step):
    """The execution pool (``-P solo|threads|prefork``, ``-c N``)."""

    name = "amqp.pool"
    blueprint = "worker"
    requires = ("amqp.app",)
    stop_timeout: ClassVar[float | None] = None  # a warm stop waits for running tasks

    def start(self, ctx: Context) -> None:
        config = ctx.get(WorkerConfig)
        runner = make_runner(ctx.get(App))
        self.pool: Pool
        if config.pool == "solo":
            self.pool = SoloPool(runner, Keeper() if config.amqp else None)
        elif config.pool == "threads":
            self.pool = ThreadPool(runner, config.concurrency)
        elif config.prefork_intake == "children":
            from bootkit_amqp_consumer.pool_children import Children

            app, state = ctx.get(App), ctx.get(WorkerState)
            self.pool = Children(app=app, config=config, runner=runner, state=state)
        else:
            from bootkit_amqp_consumer.pool_process import ProcessPool

            self.pool = ProcessPool(runner, config.concurrency)
        self.pool.start()
        ctx.provide(Pool, self.pool)  # type: ignore[type-abstract]

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.pool.stop(wait=reason is StopReason.SHUTDOWN)


class ConsumerStep(BlueprintStep):
    """Runs the consumer blueprint; restarts it when the broker connection is lost."""

    name = "amqp.consumer"
    blueprint = "worker"
    hosts = "consumer"
    requires = ("amqp.pool", "amqp.timer", "amqp.results")
    restart_on = (ConnectionError, OSError)
    max_restarts = 100
    restart_window = 60.0
    backoff_initial = 0.1
    backoff_max = 5.0
    stop_timeout: ClassVar[float | None] = None


class ConnectionStep(Step):
    """Connects to the broker; fails (and is retried with backoff) while it is down."""

    name = "amqp.connection"
    blueprint = "consumer"
    start_timeout: ClassVar[float | None] = 30.0

    def start(self, ctx: Context) -> None:
        from bootkit_amqp_consumer.transport import WorkerConnection

        config = ctx.get(WorkerConfig)
        self.conn = WorkerConnection(
            config.broker,
            heartbeat=config.broker_heartbeat or None,
            transport_options=config.transport_options,
            connect_timeout=4,
        )
        try:
            self.conn.connect()
        except Exception as exc:
            self.conn.release()
            raise BrokerConnectionLostError(
                f"cannot connect to {self.conn.as_uri()}: {type(exc).__name__}: {exc}"
            ) from exc
        ctx.provide(Connection, Connection(self.conn))

    def stop(self, ctx: Context, reason: StopReason) -> None:
        with contextlib.suppress(Exception):  # a dead connection has nothing left to release
            self.conn.release()


class EventsStep(Step):
    """Sends worker and task events (Celery's ``celeryev``) over a connection of its own."""

    name = "events.dispatcher"
    blueprint = "consumer"
    requires = ("amqp.connection",)

    def start(self, ctx: Context) -> None:
        from bootkit_amqp_consumer.events import EventDispatcher

        state = ctx.get(WorkerState)
        timer = ctx.get(Timer)
        self.dispatcher = EventDispatcher(
            ctx.get(Connection).kombu.clone(),
            hostname=ctx.get(WorkerConfig).hostname,
            clock=state.clock,
            task_events=state.task_events,
            schedule=timer.call_later,
        )
        ctx.provide(EventDispatcher, self.dispatcher)

    def stop(self, ctx: Context, reason: StopReason) -> None:
        from bootkit_amqp_consumer.events import EventDispatcher

        ctx.withdraw(EventDispatcher)
        self.dispatcher.close()


class TasksStep(Step):
    """Declares the task queues and starts consuming them."""

    name = "amqp.tasks"
    blueprint = "consumer"
    requires = ("amqp.connection",)
    after = ("events.dispatcher",)  # task events, when it runs

    def start(self, ctx: Context) -> None:
        from bootkit_amqp_consumer.consumer import TaskConsumer
        from bootkit_amqp_consumer.events import EventDispatcher

        results = ctx.get(Results)
        pool = ctx.get(Pool)  # type: ignore[type-abstract]
        self.consumer = TaskConsumer(
            app=ctx.get(App),
            config=ctx.get(WorkerConfig),
            pool=pool,
            timer=ctx.get(Timer),
            backend=results.backend,
            state=ctx.get(WorkerState),
            connection=ctx.get(Connection).kombu,
            events=ctx.find(EventDispatcher),
        )
        connection = ctx.get(Connection).kombu
        errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
        try:
            self.consumer.declare()
        except errors as exc:
            raise BrokerConnectionLostError(f"{type(exc).__name__}: {exc}") from exc
        ctx.provide(TaskConsumer, self.consumer)
        ctx.get(WorkerState).consumer = self.consumer
        begin = getattr(pool, "begin", None)
        if callable(begin):  # children consuming for themselves start now
            begin()

    def stop(self, ctx: Context, reason: StopReason) -> None:
        ctx.get(WorkerState).consumer = None
        self.consumer.close()


class ControlStep(Step):
    """Answers remote control requests (Celery's pidbox): inspect and control commands."""

    name = "control.pidbox"
    blueprint = "consumer"
    requires = ("amqp.connection",)
    # After amqp.tasks, not beside it: a connection must never be used by two threads.
    after = ("amqp.tasks",)
    before = ("amqp.loop",)

    def start(self, ctx: Context) -> None:
        from bootkit_amqp_consumer.commands import worker_commands
        from bootkit_amqp_consumer.control import ControlServer

        config = ctx.get(WorkerConfig)
        commands = ctx.get(Commands)
        self.own = worker_commands(ctx)
        commands.register(*self.own)
        self.server = ControlServer(
            connection=ctx.get(Connection).kombu,
            nodename=config.hostname,
            commands=commands,
            allow=config.control_allow,
            clock=ctx.get(WorkerState).clock,
        )
        self.server.start()

    def stop(self, ctx: Context, reason: StopReason) -> None:
        self.server.stop()
        ctx.get(Commands).unregister(*(c.name for c in self.own))


class LoopStep(Step):
    """Runs the consumer's loop in its own thread; a warm stop lets running tasks finish."""

    name = "amqp.loop"
    blueprint = "consumer"
    requires = ("amqp.tasks",)
    stop_timeout: ClassVar[float | None] = None

    def start(self, ctx: Context) -> None:
        from bootkit_amqp_consumer.consumer import TaskConsumer

        self.consumer: TaskConsumer = ctx.get(TaskConsumer)
        self.thread = threading.Thread(
            target=self._run, args=(ctx,), name="bootkit-consumer", daemon=True
        )
        self.thread.start()

    def _run(self, ctx: Context) -> None:
        try:
            self.consumer.run()
        except BrokerConnectionLostError as exc:
            ctx.fail(exc, step=self.name)
        except Exception as exc:  # the loop must never die silently
            ctx.fail(exc, step=self.name)

    def stop(self, ctx: Context, reason: StopReason) -> None:
        drain = getattr(self.consumer.pool, "drain", None)
        if reason is StopReason.SHUTDOWN and callable(drain):
            drain()  # children consuming for themselves take no more tasks from now on
        self.consumer.stop()
        if self.thread is not threading.current_thread():
            self.thread.join()


STEPS: list[type[Step]] = [
    AppStep,
    TimerStep,
    ResultsStep,
    PoolStep,
    ConsumerStep,
    ConnectionStep,
    EventsStep,
    TasksStep,
    ControlStep,
    LoopStep,
]
