"""The worker's bootkit hooks: its steps, its options and the ``call`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bootkit import Option, Step, hookimpl
from bootkit_amqp_consumer.options import OPTIONS

if TYPE_CHECKING:
    import click


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_amqp_consumer.steps import STEPS

    return STEPS


@hookimpl
def bootkit_add_options() -> list[Option]:
    return OPTIONS


@hookimpl
def bootkit_add_commands(cli: click.Group) -> None:
    from bootkit_amqp_consumer.cli import call

    cli.add_command(call)
