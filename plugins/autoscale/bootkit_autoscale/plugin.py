"""The plugin's hooks: the ``autoscale.pool`` step and its options."""

from __future__ import annotations

from bootkit import Option, Step, hookimpl

DEFAULT_COOLDOWN = 30.0


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_autoscale.steps import Autoscale

    return [Autoscale]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option("autoscale", "Pool size by load: MAX,MIN slots.", metavar="MAX,MIN"),
        Option(
            "autoscale_cooldown",
            "Seconds without backlog before the pool shrinks.",
            type=float,
            default=DEFAULT_COOLDOWN,
            metavar="SECONDS",
        ),
    ]
