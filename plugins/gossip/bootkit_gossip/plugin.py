"""The plugin's hooks: steps ``mingle.sync`` and ``gossip.peers``, their options, and
the hooks it adds for other plugins. Light on imports: ``bootkit graph`` loads it."""

from __future__ import annotations

import pluggy

from bootkit import Option, Step, hookimpl

DEFAULT_MINGLE_TIMEOUT = 1.0


@hookimpl
def bootkit_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    from bootkit_gossip import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_gossip.steps import Gossip, Mingle

    return [Gossip, Mingle]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option(
            "mingle_timeout",
            "Longest wait for mingle's replies at consumer start; it stops as soon as "
            "every peer it knows of replied.",
            type=float,
            default=DEFAULT_MINGLE_TIMEOUT,
            metavar="SECONDS",
        )
    ]
