"""``bootkit inspect`` and ``bootkit control``: send a pidbox command, print the replies.

A static table names each command's arguments, so the command line needs no worker to
parse them; ``--args JSON`` passes arguments for commands not in the table (those other
plugins add). Exit status: 0 when at least one worker replied and none replied an
error; 1 when one replied an error or none replied in time; 2 for a bad command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from bootkit import ConfigError
from bootkit.cli import current_settings
from bootkit_amqp_consumer.options import WorkerConfig


@dataclass(frozen=True)
class Param:
    """One positional argument: its key in the request, how to read it, and whether it
    may be left out; a variadic one takes every remaining argument as a list."""

    key: str
    convert: Callable[[str], Any] = str
    required: bool = True
    variadic: bool = False


@dataclass(frozen=True)
class Spec:
    kind: str  # "inspect" or "control"
    help: str
    params: tuple[Param, ...] = ()


def _task_ids(key: str) -> Param:
    return Param(key, variadic=True)


TABLE: dict[str, Spec] = {
    "ping": Spec("inspect", "Answer pong."),
    "stats": Spec("inspect", "Counters, pool, broker (no secrets), resource usage."),
    "active": Spec("inspect", "Tasks running now."),
    "reserved": Spec("inspect", "Tasks received and waiting for a slot."),
    "scheduled": Spec("inspect", "Tasks held for their ETA or rate limit."),
    "registered": Spec("inspect", "Names of the registered tasks."),
    "revoked": Spec("inspect", "Ids of revoked tasks."),
    "clock": Spec("inspect", "The Lamport clock."),
    "active_queues": Spec("inspect", "Queues consumed now."),
    "report": Spec("inspect", "Versions and set-up."),
    "conf": Spec("inspect", "Configuration (no secrets)."),
    "run_record": Spec(
        "inspect", "Timings of the last boot and shutdown (bootkit analyze --node)."
    ),
    "query_task": Spec(
        "inspect", "Where tasks ID... are (active, reserved, scheduled).", (_task_ids("ids"),)
    ),
    "revoke": Spec(
        "control", "Revoke tasks ID...; --terminate kills them if running.", (_task_ids("task_id"),)
    ),
    "shutdown": Spec("control", "Warm shutdown (allowlisted)."),
    "pool_grow": Spec("control", "Add [N] pool slots (allowlisted).", (Param("n", int, False),)),
    "pool_shrink": Spec(
        "control", "Remove [N] pool slots (allowlisted).", (Param("n", int, False),)
    ),
    "rate_limit": Spec(
        "control",
        "Set TASK's rate limit RATE (10/s, 100/m, 1000/h, 0 for none; allowlisted).",
        (Param("task_name"), Param("rate_limit")),
    ),
    "time_limit": Spec(
        "control",
        "Set TASK's SOFT [HARD] time limits in seconds (allowlisted).",
        (Param("task_name"), Param("soft", float), Param("hard", float, False)),
    ),
    "add_consumer": Spec(
        "control",
        "Consume QUEUE [EXCHANGE [TYPE [ROUTING_KEY]]] (allowlisted).",
        (
            Param("queue"),
            Param("exchange", required=False),
            Param("exchange_type", required=False),
            Param("routing_key", required=False),
        ),
    ),
    "cancel_consumer": Spec("control", "Stop consuming QUEUE (allowlisted).", (Param("queue"),)),
    "enable_events": Spec("control", "Send task events."),
    "disable_events": Spec("control", "Stop sending task events."),
    "heartbeat": Spec("control", "Send a worker-heartbeat now."),
    "election": Spec(
        "control",
        "Stand in election ID on TOPIC [ACTION].",
        (Param("id"), Param("topic"), Param("action", required=False)),
    ),
}


def _listing(kind: str) -> str:
    lines = [f"  {name:<16} {spec.help}" for name, spec in TABLE.items() if spec.kind == kind]
    return "\n\b\nCommands:\n" + "\n".join(lines)


def arguments_for(
    kind: str, command: str, args: tuple[str, ...], extra: str | None
) -> dict[str, Any]:
    """The request's arguments from the command line. Raises: ConfigError."""
    spec = TABLE.get(command)
    if spec is None and extra is None:
        known = ", ".join(n for n, s in TABLE.items() if s.kind == kind)
        raise ConfigError(
            f"{kind}: unknown command {command!r}; known: {known} (or pass --args JSON)"
        )
    if spec is not None and spec.kind != kind:
        raise ConfigError(f"{command!r} is a `bootkit {spec.kind}` command, not `bootkit {kind}`")
    arguments: dict[str, Any] = {}
    if extra is not None:
        loaded = json.loads(extra)
        if not isinstance(loaded, dict):
            raise ConfigError(f"--args must be a JSON object, got {extra}")
        arguments.update(loaded)
    rest = list(args)
    for param in spec.params if spec else ():
        if param.variadic:
            if not rest and param.key not in arguments:
                raise ConfigError(f"{command}: give at least one {param.key.upper()}")
            arguments.setdefault(param.key, rest)
            rest = []
        elif rest:
            value = rest.pop(0)
            try:
                arguments[param.key] = param.convert(value)
            except ValueError:
                raise ConfigError(
                    f"{command}: {param.key} must be a number, got {value!r}"
                ) from None
        elif param.required and param.key not in arguments:
            raise ConfigError(f"{command}: missing {param.key.upper()}")
    if rest:
        raise ConfigError(f"{command}: unexpected arguments {' '.join(rest)}")
    return arguments


def render(reply: Any) -> tuple[bool, str]:
    """(ok, text) for one node's reply."""
    if isinstance(reply, dict) and set(reply) == {"error"}:
        return False, f"ERROR {reply['error']}"
    if isinstance(reply, dict) and set(reply) == {"ok"}:
        return True, f"OK\n    {reply['ok']}"
    if isinstance(reply, list) and not reply:
        return True, "OK\n    - empty -"
    body = json.dumps(reply, indent=4, sort_keys=True, default=str)
    return True, "OK\n" + "\n".join("    " + line for line in body.splitlines())


def run(
    kind: str,
    command: str,
    args: tuple[str, ...],
    *,
    destination: tuple[str, ...],
    timeout: float,
    as_json: bool,
    broker: str | None,
    extra: str | None,
    more: dict[str, Any] | None = None,
) -> None:
    from kombu.connection import Connection

    from bootkit_amqp_consumer.pidbox import call

    arguments = arguments_for(kind, command, args, extra) | (more or {})
    nodes = [n.strip() for spec in destination for n in spec.split(",") if n.strip()]
    config = WorkerConfig.from_settings(current_settings({"broker": broker}))
    with Connection(
        config.broker, transport_options=config.transport_options, connect_timeout=4
    ) as conn:
        replies = call(conn, command, arguments, destination=nodes or None, timeout=timeout)
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    if not merged:
        click.echo(f"bootkit: no worker replied within {timeout:g}s", err=True)
        sys.exit(1)
    failed = False
    if as_json:
        click.echo(json.dumps(merged, default=str))
        failed = any(render(r)[0] is False for r in merged.values())
    else:
        for node in sorted(merged):
            ok, text = render(merged[node])
            failed |= not ok
            click.echo(f"-> {node}: {text}")
        click.echo(f"\n{len(merged)} node{'s' if len(merged) != 1 else ''} online.")
    if failed:
        sys.exit(1)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.argument("command"),
            click.argument("args", nargs=-1),
            click.option(
                "--destination",
                "-d",
                multiple=True,
                metavar="NODE",
                help="Only these nodes (repeatable, comma-separated).",
            ),
            click.option(
                "--timeout",
                "-t",
                type=float,
                default=1.0,
                show_default=True,
                help="Seconds to wait for replies.",
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print one JSON object {node: reply}."
            ),
            click.option(
                "--broker",
                "-b",
                default=None,
                metavar="URL",
                help="Broker URL (default: as the worker).",
            ),
            click.option(
                "--args", "extra", default=None, metavar="JSON", help="Arguments as a JSON object."
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


@click.command("inspect", epilog=_listing("inspect"))
@_common
def inspect(command: str, args: tuple[str, ...], **options: Any) -> None:
    """Ask workers COMMAND (read-only) and print each one's reply."""
    run("inspect", command, args, **options)


@click.command("control", epilog=_listing("control"))
@_common
@click.option("--terminate", is_flag=True, help="revoke: also kill the tasks if running.")
@click.option(
    "--signal",
    "signame",
    default="SIGTERM",
    show_default=True,
    help="revoke --terminate: the signal.",
)
def control(
    command: str, args: tuple[str, ...], terminate: bool, signame: str, **options: Any
) -> None:
    """Tell workers to do COMMAND and print each one's reply."""
    more = {"terminate": True, "signal": signame} if terminate else None
    run("control", command, args, more=more, **options)
