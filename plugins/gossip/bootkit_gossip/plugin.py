"""The plugin's hooks: steps ``mingle.sync`` and ``gossip.peers``, the
``mingle_timeout`` option, and the hooks it adds for other plugins.

Light on imports: ``bootkit graph`` loads this module, not the steps'.
"""

from __future__ import annotations

import pluggy

from bootkit import ConfigError, Option, Settings, Step, hookimpl

DEFAULT_MINGLE_TIMEOUT = 1.0


@hookimpl
def bootkit_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    from bootkit_gossip import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def bootkit_add_steps() -> list[type[Step]]:
    from bootkit_gossip.gossip import Gossip
    from bootkit_gossip.mingle import Mingle

    return [Gossip, Mingle]


@hookimpl
def bootkit_add_options() -> list[Option]:
    return [
        Option(
            "mingle_timeout",
            "Longest wait for mingle's replies at consumer start; it returns as soon as "
            "every peer the broker knows of replied.",
            type=float,
            default=DEFAULT_MINGLE_TIMEOUT,
            metavar="SECONDS",
        )
    ]


@hookimpl
def bootkit_configure(settings: Settings) -> None:
    timeout = settings.option("mingle_timeout", DEFAULT_MINGLE_TIMEOUT)
    if not timeout > 0:
        raise ConfigError(f"--mingle-timeout must be above 0 seconds, got {timeout:g}")
