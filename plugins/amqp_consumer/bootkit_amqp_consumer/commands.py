"""The worker's own control commands, registered by the ``control.pidbox`` step.

Each handler takes the request's arguments and returns what goes into the reply under
the worker's node name. Services are looked up when a command runs, so a command
sees the consumer that runs now (it is replaced after a reconnect).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bootkit import Context, logger
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.control import Command
from bootkit_amqp_consumer.events import EventDispatcher
from bootkit_amqp_consumer.options import WorkerConfig
from bootkit_amqp_consumer.state import WorkerState


def worker_commands(ctx: Context) -> list[Command]:
    """The commands every worker answers."""
    state = ctx.get(WorkerState)
    config = ctx.get(WorkerConfig)
    app = ctx.get(App)
    log = logger().bind(hostname=config.hostname)

    def ping(arguments: Mapping[str, Any]) -> Any:
        return {"ok": "pong"}

    def clock(arguments: Mapping[str, Any]) -> Any:
        return {"clock": state.clock.value}

    def registered(arguments: Mapping[str, Any]) -> Any:
        return sorted(app.tasks)

    def revoked(arguments: Mapping[str, Any]) -> Any:
        with state.lock:
            return list(state.revoked)

    def revoke(arguments: Mapping[str, Any]) -> Any:
        ids = arguments.get("task_id")
        task_ids = [ids] if isinstance(ids, str) else [str(i) for i in ids or ()]
        for task_id in task_ids:
            state.revoke(task_id)
        log.info("tasks_revoked", task_ids=task_ids, terminate=bool(arguments.get("terminate")))
        return {"ok": f"tasks {', '.join(task_ids)} flagged as revoked"}

    def hello(arguments: Mapping[str, Any]) -> Any:
        """Mingle: take the sender's revoked ids, answer with ours and our clock."""
        sender = arguments.get("from_node")
        if sender == config.hostname:
            return None  # our own hello: no reply
        theirs = arguments.get("revoked")
        new = state.merge_revoked(theirs) if isinstance(theirs, dict) else 0
        log.info("mingle_hello_answered", peer=sender, revoked_new=new)
        return {"revoked": state.revoked_wire(), "clock": state.clock.forward()}

    def set_events(on: bool) -> Any:
        def toggle(arguments: Mapping[str, Any]) -> Any:
            state.task_events = on
            dispatcher = ctx.find(EventDispatcher)
            if dispatcher is not None:
                dispatcher.task_events = on
            log.info("task_events_" + ("enabled" if on else "disabled"))
            return {"ok": "task events " + ("enabled" if on else "disabled")}

        return toggle

    return [
        Command("ping", ping, "inspect", help="Answer pong."),
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
