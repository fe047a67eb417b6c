"""The plugin's hooks: the ``heartbeat.beat`` step and the ``heartbeat_interval`` option.

Kept free of heavy imports: `bootkit graph` loads this module, not the step's.
"""

from __future__ import annotations

from bootkit import ConfigError, Option, Settings, Step, hookimpl

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
            "Seconds between worker-heartbeat events; monitors and gossip count a worker "
            "lost after two intervals without one.",
            type=float,
            default=DEFAULT_INTERVAL,
            metavar="SECONDS",
        )
    ]


@hookimpl
def bootkit_configure(settings: Settings) -> None:
    interval = settings.option("heartbeat_interval", DEFAULT_INTERVAL)
    if not interval > 0:
        raise ConfigError(f"--heartbeat-interval must be above 0 seconds, got {interval:g}")
