"""The worker's bootkit hooks: its steps, its options and the ``call`` command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bootkit import BootkitError, Option, Settings, Step, hookimpl
from bootkit_amqp_consumer.options import OPTIONS

if TYPE_CHECKING:
    import click

    from bootkit import Kernel


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_amqp_consumer.steps import STEPS

    return STEPS


@hookimpl
def bootkit_add_options() -> list[Option]:
    return OPTIONS


@hookimpl
def bootkit_cold_shutdown(kernel: Kernel) -> None:
    """Kill the pool's children (a task must not run on, unseen, after its worker died),
    then hand unacknowledged messages back to the broker."""
    from bootkit_amqp_consumer.pools import Pool
    from bootkit_amqp_consumer.state import WorkerState

    for blueprint in kernel.blueprints:
        pool = blueprint.ctx.find(Pool)  # type: ignore[type-abstract]
        if pool is not None:
            pool.stop(wait=False)
        state = blueprint.ctx.find(WorkerState)
        for restore in list(state.on_cold if state else ()):
            restore()


@hookimpl
def bootkit_run_record(settings: Settings, node: str) -> Mapping[str, Any] | None:
    """A live worker's run record, asked over remote control (``run_record``)."""
    from kombu.connection import Connection

    from bootkit_amqp_consumer.options import WorkerConfig
    from bootkit_amqp_consumer.pidbox import call

    config = WorkerConfig.from_settings(settings)
    with Connection(
        config.broker, transport_options=config.transport_options, connect_timeout=4
    ) as connection:
        replies = call(connection, "run_record", destination=[node], timeout=5.0)
    if not replies:
        raise BootkitError(f"--node {node}: no reply within 5s (is the worker running?)")
    record = replies[0].get(node)
    if not isinstance(record, dict) or "error" in record:
        error = record.get("error") if isinstance(record, dict) else record
        raise BootkitError(f"--node {node}: {error}")
    return record


@hookimpl
def bootkit_add_commands(cli: click.Group) -> None:
    from bootkit_amqp_consumer.cli import call
    from bootkit_amqp_consumer.remote import control, inspect

    cli.add_command(call)
    cli.add_command(inspect)
    cli.add_command(control)
