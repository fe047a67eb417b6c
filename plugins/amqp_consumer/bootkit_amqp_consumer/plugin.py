"""The worker's bootkit hooks: its steps, its options and the ``call`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bootkit import Option, Step, hookimpl
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
def bootkit_add_commands(cli: click.Group) -> None:
    from bootkit_amqp_consumer.cli import call
    from bootkit_amqp_consumer.remote import control, inspect

    cli.add_command(call)
    cli.add_command(inspect)
    cli.add_command(control)
