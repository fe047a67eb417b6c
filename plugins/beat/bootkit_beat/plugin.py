"""The plugin's hooks: the ``beat.scheduler`` step, its options, ``bootkit beat``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from bootkit import Option, Step, hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_beat.steps import Beat

    return [Beat]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option(
            "beat",
            "Also run the periodic task scheduler (one per cluster runs).",
            short="-B",
            type=bool,
            default=False,
        ),
        Option(
            "beat_schedule",
            "A periodic task: 'NAME every INTERVAL TASK [ARGS_JSON]' or "
            "'NAME cron M H DOM MON DOW TASK [ARGS_JSON]' (repeatable).",
            multiple=True,
            metavar="ENTRY",
        ),
        Option(
            "beat_state",
            "File keeping each periodic task's last run (default: in the state folder).",
            metavar="PATH",
        ),
    ]


@hookimpl
def bootkit_add_commands(cli: click.Group) -> None:
    import click

    @cli.command(
        "beat",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def beat(args: tuple[str, ...]) -> None:
        """Run only the scheduler: `bootkit start -B` without consuming tasks."""
        argv = sys.argv[1:]
        before = argv[: argv.index("beat")] if "beat" in argv else []
        command = [sys.executable, "-m", "bootkit", *before, "start", "--beat"]
        command += ["--without", "amqp.consumer", "--pool", "solo", *args]
        os.execv(sys.executable, command)
