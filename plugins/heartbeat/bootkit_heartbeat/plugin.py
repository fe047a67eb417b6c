"""The plugin's hooks: the ``heartbeat.beat`` step and the ``heartbeat_interval`` option.

Kept free of heavy imports: `bootkit graph` loads this module, not the step's.
"""

from __future__ import annotations

from bootkit import Option, Step, hookimpl

DEFAULT_INTERVAL = 2.0


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_heartbeat.steps import Heartbeat

    return [Heartbeat]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option(
            "heartbeat_interval",
            "Seconds between worker-heartbeat events; monitors count a worker lost "
            "after two missed ones.",
            type=float,
            default=DEFAULT_INTERVAL,
            metavar="SECONDS",
        )
    ]
