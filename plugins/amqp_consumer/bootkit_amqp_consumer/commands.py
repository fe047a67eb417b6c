"""The worker's own control commands, registered by the ``control.pidbox`` step.

Each handler takes the request's arguments and returns what goes into the reply under
the worker's node name. Services are looked up when a command runs, so a command
sees the consumer that runs now (it is replaced after a reconnect).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from kombu.utils.url import maybe_sanitize_url

from bootkit import Context, logger
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.consumer import TaskConsumer
from bootkit_amqp_consumer.control import Command
from bootkit_amqp_consumer.delivery import Delivery
from bootkit_amqp_consumer.events import EventDispatcher, sw_version
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.pools import Pool
from bootkit_amqp_consumer.ratelimit import parse_rate
from bootkit_amqp_consumer.state import WorkerState
from bootkit_amqp_consumer.subscription import Subscription


class CommandError(Exception):
    """Bad arguments: the reply is ``{"error": message}``."""


def _ids(arguments: Mapping[str, Any], key: str = "task_id") -> list[str]:
    ids = arguments.get(key)
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, list | tuple) and all(isinstance(i, str) for i in ids):
        return list(ids)
    raise CommandError(f"{key} must be a task id or a list of them, got {ids!r}")


def _count(arguments: Mapping[str, Any]) -> int:
    n = arguments.get("n", 1)
    try:
        value = int(n)
    except (TypeError, ValueError):
        raise CommandError(f"n must be a whole number, got {n!r}") from None
    if value < 1:
        raise CommandError(f"n must be at least 1, got {value}")
    return value


def _limit(value: object, what: str) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CommandError(f"{what} must be seconds, got {value!r}") from None
    if seconds < 0:
        raise CommandError(f"{what} cannot be negative, got {value!r}")
    return seconds


def worker_commands(ctx: Context) -> list[Command]:
    """The commands every worker answers."""
    state = ctx.get(WorkerState)
    config = ctx.get(WorkerConfig)
    app = ctx.get(App)
    log = logger().bind(hostname=config.hostname)

    def consumer() -> TaskConsumer:
        found = ctx.find(TaskConsumer)
        if found is None:
            raise CommandError("the worker is not consuming right now (reconnecting)")
        return found

    def subscription() -> Subscription:
        found = consumer().subscription
        if found is None:
            raise CommandError("the worker is not consuming right now (reconnecting)")
        return found

    def pool() -> Pool:
        return ctx.get(Pool)  # type: ignore[type-abstract]

    def children() -> Any:
        """The pool whose children consume for themselves (pool_children), else None."""
        found = pool()
        return found if getattr(found, "consumes", False) else None

    def reports(key: str) -> list[Any]:
        """What the consuming children hold under `key` (see `Children.gather`)."""
        return [item for report in children().gather() for item in report[key]]

    def task_named(arguments: Mapping[str, Any]) -> Any:
        name = arguments.get("task_name")
        if not isinstance(name, str) or name not in app.tasks:
            raise CommandError(f"unknown task {name!r}; registered: {', '.join(sorted(app.tasks))}")
        return app.tasks[name]

    def worker_pid() -> int | None:
        # Threads and solo run tasks in this process; a prefork child is not tracked.
        return os.getpid() if pool().kind != "prefork" else None

    def info(delivery: Delivery) -> dict[str, Any]:
        return delivery.info(config.hostname, worker_pid())

    def scheduled_info(delivery: Delivery) -> dict[str, Any]:
        return delivery.scheduled_info(config.hostname, worker_pid())

    def ping(arguments: Mapping[str, Any]) -> Any:
        return {"ok": "pong"}

    def active(arguments: Mapping[str, Any]) -> Any:
        if children():
            return reports("active")
        return [info(d) for d in consumer().running.values()]

    def reserved(arguments: Mapping[str, Any]) -> Any:
        if children():
            return reports("reserved")
        return [info(d) for d in consumer().reserved]

    def scheduled(arguments: Mapping[str, Any]) -> Any:
        if children():
            return reports("scheduled")
        return [scheduled_info(d) for d in consumer().holds.tasks.values()]

    def query_task(arguments: Mapping[str, Any]) -> Any:
        wanted = set(_ids(arguments, "ids" if "ids" in arguments else "task_id"))
        if children():
            where_infos = [
                (where, item if where != "scheduled" else item["request"])
                for report in children().gather()
                for where in ("active", "reserved", "scheduled")
                for item in report[where]
            ]
        else:
            now = consumer()
            where_infos = [
                (where, info(d))
                for where, deliveries in (
                    ("active", now.running.values()),
                    ("reserved", now.reserved),
                    ("scheduled", now.holds.tasks.values()),
                )
                for d in deliveries
                if d.request.id in wanted
            ]
        return {i["id"]: [where, i] for where, i in where_infos if i["id"] in wanted}

    def active_queues(arguments: Mapping[str, Any]) -> Any:
        if children():
            by_name = {q["name"]: q for q in reports("queues")}
            return list(by_name.values())
        return [q.as_dict(recurse=True) for q in subscription().queues()]

    def stats(arguments: Mapping[str, Any]) -> Any:
        the_pool = pool()
        pids = getattr(the_pool, "pids", None)
        found = ctx.find(TaskConsumer)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        connection = found.connection if found is not None else None
        total, prefetch = dict(state.total), found.qos.value if found and found.qos else None
        if children():
            told = children().gather()
            total = dict(sum((Counter(r["total"]) for r in told), Counter()))
            prefetch = sum(r["prefetch_count"] or 0 for r in told)
        return {
            "total": total,
            "pid": os.getpid(),
            "clock": str(state.clock.value),
            "uptime": int(time.monotonic() - state.started),
            "pool": {
                "implementation": the_pool.kind,
                "max-concurrency": the_pool.size,
                "processes": pids() if callable(pids) else [os.getpid()],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": False,
                "timeouts": [0, 0],
            },
            "broker": broker_info(connection),
            "prefetch_count": prefetch,
            "rusage": {
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
                "maxrss": usage.ru_maxrss,
                "minflt": usage.ru_minflt,
                "majflt": usage.ru_majflt,
                "nvcsw": usage.ru_nvcsw,
                "nivcsw": usage.ru_nivcsw,
            },
            "sw_ident": "py-bootkit",
            "sw_ver": sw_version(),
        } | {name: section() for name, section in list(state.stats_sections.items())}

    def run_record(arguments: Mapping[str, Any]) -> Any:
        """This process's run record (timings of its last boot and shutdown)."""
        try:
            return json.loads((config.state_dir / "timings.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"no run record: {exc}") from None

    def report(arguments: Mapping[str, Any]) -> Any:
        return {
            "ok": f"bootkit-amqp-consumer {sw_version()} on Python {platform.python_version()} "
            f"({sys.platform}); pool {pool().kind} x{pool().size}; broker "
            f"{maybe_sanitize_url(config.broker)}"
        }

    def conf(arguments: Mapping[str, Any]) -> Any:
        values = asdict(config)
        values["broker"] = maybe_sanitize_url(config.broker)
        if config.result_backend:
            values["result_backend"] = maybe_sanitize_url(config.result_backend)
        values.pop("transport_options", None)
        return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in values.items()} | {
            "state_dir": str(config.state_dir),
            "queues": list(config.queues),
        }

    def shutdown(arguments: Mapping[str, Any]) -> Any:
        log.warning("shutdown_requested_by_control")
        os.kill(os.getpid(), signal.SIGTERM)  # the same warm shutdown as a SIGTERM
        return {"ok": "shutting down"}

    def resize(grow: bool) -> Any:
        def handler(arguments: Mapping[str, Any]) -> Any:
            n = _count(arguments)
            the_pool = pool()
            if the_pool.kind == "solo":
                raise CommandError("the solo pool runs one task at a time; it cannot change size")
            now = ctx.find(TaskConsumer)
            if grow:
                the_pool.grow(n)
                if now is not None and now.qos is not None:
                    now.qos.increment_eventually(n * config.prefetch_multiplier)
                    now.refill()
            else:
                before = the_pool.size
                the_pool.shrink(n)
                if now is not None and now.qos is not None:
                    cut = (before - the_pool.size) * config.prefetch_multiplier
                    if cut:
                        now.qos.decrement_eventually(cut)
            log.info("pool_resized", size=the_pool.size)
            return {"ok": f"pool will {'grow' if grow else 'shrink'} by {n}"}

        return handler

    def rate_limit(arguments: Mapping[str, Any]) -> Any:
        task = task_named(arguments)
        try:
            rate = parse_rate(arguments.get("rate_limit"))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        state.rate_limits[task.name] = rate
        if children():
            children().broadcast("rate_limit", task.name, rate)
        log.info("rate_limit_set", task=task.name, per_second=rate)
        if rate is None:
            return {"ok": f"rate limits disabled for task {task.name}"}
        return {"ok": f"new rate limit set for task {task.name}: {arguments['rate_limit']}"}

    def time_limit(arguments: Mapping[str, Any]) -> Any:
        task = task_named(arguments)
        task.soft_time_limit = _limit(arguments.get("soft"), "soft")
        task.time_limit = _limit(arguments.get("hard"), "hard")
        if children():
            children().broadcast("time_limit", task.name, task.soft_time_limit, task.time_limit)
        log.info("time_limit_set", task=task.name, soft=task.soft_time_limit, hard=task.time_limit)
        return {"ok": f"time limits set successfully for task {task.name}"}

    def add_consumer(arguments: Mapping[str, Any]) -> Any:
        queue = arguments.get("queue")
        if not isinstance(queue, str) or not queue:
            raise CommandError("add_consumer needs a queue name")
        exchange = arguments.get("exchange") or queue
        kind = arguments.get("exchange_type") or "direct"
        key = arguments.get("routing_key") or queue
        if children():
            state.cancelled_queues.discard(queue)
            state.added_queues[queue] = (str(exchange), str(kind), str(key))
            children().broadcast("add_queue", queue, str(exchange), str(kind), str(key))
        else:
            subscription().add_queue(queue, str(exchange), str(kind), str(key))
        log.info("queue_added", queue=queue)
        return {"ok": f"add consumer {queue}"}

    def cancel_consumer(arguments: Mapping[str, Any]) -> Any:
        queue = arguments.get("queue")
        if children():
            consumed = {*config.queues, *state.added_queues} - state.cancelled_queues
            if queue not in consumed:
                raise CommandError(f"not consuming from queue {queue!r}")
            state.cancelled_queues.add(queue)
            state.added_queues.pop(queue, None)
            children().broadcast("cancel_queue", queue)
        elif not isinstance(queue, str) or not subscription().cancel_queue(queue):
            raise CommandError(f"not consuming from queue {queue!r}")
        log.info("queue_cancelled", queue=queue)
        return {"ok": f"no longer consuming from {queue}"}

    def clock(arguments: Mapping[str, Any]) -> Any:
        return {"clock": state.clock.value}

    def registered(arguments: Mapping[str, Any]) -> Any:
        return sorted(app.tasks)

    def revoked(arguments: Mapping[str, Any]) -> Any:
        with state.lock:
            return list(state.revoked)

    def revoke(arguments: Mapping[str, Any]) -> Any:
        task_ids = _ids(arguments)
        terminate = bool(arguments.get("terminate"))
        for task_id in task_ids:
            state.revoke(task_id)
        log.info("tasks_revoked", task_ids=task_ids, terminate=terminate)
        if not terminate:
            return {"ok": f"tasks {', '.join(task_ids)} flagged as revoked"}
        name = arguments.get("signal") or "SIGTERM"
        try:
            signum = signal.Signals[name if str(name).startswith("SIG") else f"SIG{name}"]
        except KeyError:
            raise CommandError(f"unknown signal {name!r}") from None
        the_pool = pool()
        if the_pool.kind != "prefork":
            raise CommandError(
                f"the {the_pool.kind} pool cannot terminate a running task; "
                "the tasks were flagged as revoked"
            )
        killed = [t for t in task_ids if the_pool.terminate(t, signum)]
        return {"ok": f"tasks {', '.join(task_ids)} flagged as revoked; terminated: {killed}"}

    def hello(arguments: Mapping[str, Any]) -> Any:
        """Mingle: take the sender's revoked ids, answer with ours and our clock."""
        sender = arguments.get("from_node")
        if sender == config.hostname:
            return None  # our own hello: no reply
        theirs = arguments.get("revoked")
        if isinstance(theirs, list):  # Celery 5.7 sends bare ids: revoked as of now
            theirs = {i: time.time() for i in theirs if isinstance(i, str)}
        new = state.merge_revoked(theirs) if isinstance(theirs, dict) else 0
        log.info("mingle_hello_answered", peer=sender, revoked_new=new)
        return {"revoked": state.revoked_wire(), "clock": state.clock.forward()}

    def set_events(on: bool) -> Any:
        def toggle(arguments: Mapping[str, Any]) -> Any:
            state.task_events = on
            dispatcher = ctx.find(EventDispatcher)
            if dispatcher is not None:
                dispatcher.task_events = on
            if children():
                children().broadcast("task_events", on)
            log.info("task_events_" + ("enabled" if on else "disabled"))
            return {"ok": "task events " + ("enabled" if on else "disabled")}

        return toggle

    def guarded(handler: Any) -> Any:
        def run(arguments: Mapping[str, Any]) -> Any:
            try:
                return handler(arguments)
            except CommandError as exc:
                return {"error": str(exc)}

        return run

    commands = [
        Command("ping", ping, "inspect", help="Answer pong."),
        Command("stats", stats, "inspect", help="Counters, pool, broker (no secrets), usage."),
        Command("active", active, "inspect", help="Tasks running now."),
        Command("reserved", reserved, "inspect", help="Tasks received, waiting for a slot."),
        Command("scheduled", scheduled, "inspect", help="Tasks held for their ETA or rate limit."),
        Command("query_task", query_task, "inspect", help="Where given task ids are, if here."),
        Command("active_queues", active_queues, "inspect", help="Queues consumed now."),
        Command("report", report, "inspect", help="Versions and set-up, one line."),
        Command("run_record", run_record, "inspect", help="Timings of the last boot/shutdown."),
        Command("conf", conf, "inspect", help="The worker's configuration (no secrets)."),
        Command("shutdown", shutdown, "control", gate="shutdown", help="Warm shutdown."),
        Command("pool_grow", resize(True), "control", gate="pool_grow", help="Add N slots."),
        Command(
            "pool_shrink", resize(False), "control", gate="pool_shrink", help="Remove N slots."
        ),
        Command(
            "rate_limit", rate_limit, "control", gate="rate_limit", help="Set a task's rate limit."
        ),
        Command(
            "time_limit", time_limit, "control", gate="time_limit", help="Set a task's time limits."
        ),
        Command(
            "add_consumer", add_consumer, "control", gate="add_consumer", help="Consume a queue."
        ),
        Command(
            "cancel_consumer",
            cancel_consumer,
            "control",
            gate="cancel_consumer",
            help="Stop consuming a queue.",
        ),
        Command("clock", clock, "inspect", help="The worker's Lamport clock."),
        Command("registered", registered, "inspect", help="Names of the registered tasks."),
        Command("revoked", revoked, "inspect", help="Ids of revoked tasks."),
        Command(
            "revoke",
            revoke,
            "control",
            gate=lambda a: "terminate" if a.get("terminate") else None,
            help="Revoke task ids; with terminate (allowlisted), kill them if running.",
        ),
        Command("hello", hello, "control", help="Mingle: exchange revoked ids and clock."),
        Command("enable_events", set_events(True), "control", help="Send task events."),
        Command("disable_events", set_events(False), "control", help="Stop task events."),
    ]
    return [Command(c.name, guarded(c.handler), c.kind, c.gate, c.help) for c in commands]


def broker_info(connection: Any) -> dict[str, Any]:
    """Where the worker's broker is, never its password."""
    if connection is None:
        return {}
    return {
        "hostname": connection.hostname,
        "port": connection.port,
        "userid": connection.userid,
        "virtual_host": connection.virtual_host,
        "transport": connection.transport_cls,
        "ssl": bool(connection.ssl),
        "heartbeat": connection.heartbeat,
        "connect_timeout": connection.connect_timeout,
        "uri": maybe_sanitize_url(connection.as_uri()),
    }
