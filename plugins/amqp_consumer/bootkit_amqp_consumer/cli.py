"""``bootkit call``: send a task by name from the command line, and wait for its result."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bootkit import BootkitError, ConfigError
from bootkit.cli import current_settings
from bootkit_amqp_consumer.app import App
from bootkit_amqp_consumer.errors import TaskFailedError, TaskRevokedError
from bootkit_amqp_consumer.options import WorkerConfig


def _value(text: str) -> Any:
    """A command-line argument as JSON when it parses (2, "x", [1]), else as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.command("call")
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option(
    "--kwargs",
    "kwargs_json",
    default=None,
    metavar="JSON",
    help="Keyword arguments as a JSON object.",
)
@click.option("--queue", "-q", default=None, help="Queue to send to (default: celery).")
@click.option(
    "--countdown", type=float, default=None, help="Run no sooner than this many seconds from now."
)
@click.option(
    "--expires", type=float, default=None, help="Discard if not started within this many seconds."
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it as JSON.")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait with --wait."
)
@click.option(
    "--broker", "-b", default=None, metavar="URL", help="Broker URL (default: as the worker)."
)
@click.option("--result-backend", default=None, metavar="URL", help="Result backend URL.")
def call(
    name: str,
    args: tuple[str, ...],
    kwargs_json: str | None,
    queue: str | None,
    countdown: float | None,
    expires: float | None,
    wait: bool,
    timeout: float,
    broker: str | None,
    result_backend: str | None,
) -> None:
    """Send task NAME with ARGS (each read as JSON when it parses) and print its id."""
    kwargs = json.loads(kwargs_json) if kwargs_json else {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"--kwargs must be a JSON object, got {kwargs_json}")
    config = WorkerConfig.from_settings(
        current_settings({"broker": broker, "result_backend": result_backend})
    )
    app = App("bootkit-call")
    app.configure(
        broker=config.broker,
        result_backend=config.result_backend,
        transport_options=config.transport_options,
    )
    try:
        result = app.send_task(
            name,
            [_value(a) for a in args],
            kwargs,
            queue=queue,
            countdown=countdown,
            expires=expires,
        )
        if not wait:
            click.echo(result.id)
            return
        if app.backend is None:
            raise ConfigError("--wait needs a result backend; pass --result-backend URL")
        try:
            value = result.get(timeout=timeout)
        except (TaskFailedError, TaskRevokedError, Exception) as exc:
            if isinstance(exc, BootkitError):
                raise
            click.echo(
                f"bootkit: task {name}[{result.id}] failed: {type(exc).__name__}: {exc}", err=True
            )
            sys.exit(1)
        click.echo(json.dumps(value))
    finally:
        app.close()
