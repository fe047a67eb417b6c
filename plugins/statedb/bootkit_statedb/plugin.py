"""The plugin's hooks: the ``statedb.file`` step and the ``statedb`` option."""

from __future__ import annotations

from bootkit import Option, Step, hookimpl


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_statedb.steps import StateDB

    return [StateDB]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option(
            "statedb",
            "Keep revoked task ids and the clock in this file across restarts.",
            metavar="PATH",
        )
    ]
