"""The hooks a bootkit plugin may implement; call them with keyword arguments.

A plugin is a module (or object) named by an entry point in the group ``bootkit``;
mark its functions with ``@bootkit.hookimpl`` (needed for options such as
``tryfirst``; an unmarked ``bootkit_*`` function counts as a hook too, as in pytest).
A ``bootkit_*`` function that matches no hook here fails the load: a misspelt hook
never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from bootkit.config import Option, Settings
    from bootkit.events import BlueprintEvent, ChildRestart, StepEvent
    from bootkit.kernel import Kernel
    from bootkit.step import Step

PROJECT = "bootkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def bootkit_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add hooks of this plugin's own with ``pluginmanager.add_hookspecs(module)``.

    Called as each plugin registers, so other plugins can implement the new hooks
    (prefixed ``bootkit_`` like every hook); steps call them through ``ctx.hook``.
    """


@hookspec
def bootkit_add_steps() -> Sequence[type[Step]]:
    """Return the step classes this plugin contributes.

    Called once per command, before the plan is resolved; return classes, not
    instances. The kernel records which plugin returned each class.
    """
    raise NotImplementedError


@hookspec
def bootkit_add_options() -> Sequence[Option]:
    """Return the settings this plugin adds.

    Called once per command, before the command line is parsed; each option becomes a
    flag of `start`, `graph`, `steps` and `why`, an environment variable and a config
    file key, and its value reaches steps as ``settings.option(name)``.
    """
    raise NotImplementedError


@hookspec
def bootkit_add_commands(cli: click.Group) -> None:
    """Add subcommands to the ``bootkit`` command line with ``cli.add_command``.

    Called when the command line is built, after every plugin is registered.
    """


@hookspec
def bootkit_configure(settings: Settings) -> None:
    """Check or act on the final settings before the plan is resolved.

    Raise `bootkit.ConfigError` to refuse them with a one-line reason.
    """


@hookspec
def bootkit_cold_shutdown(kernel: Kernel) -> None:
    """Undo at once what must not outlive the process (e.g. kill child processes).

    Called from the signal thread when a second SIGTERM/SIGINT cuts the shutdown
    short, just before the process exits with status 3; all hooks together get two
    seconds. Steps are not stopped: use it only for what dying would leave behind.
    """


@hookspec(firstresult=True)
def bootkit_run_record(settings: Settings, node: str) -> Mapping[str, Any] | None:
    """The run record (as in ``timings.json``) of the live process named `node`.

    `bootkit analyze --node NODE` asks; a plugin that can reach such a process (the
    worker does, over remote control) returns its record, others return None. Raise
    `bootkit.BootkitError` with a one-line reason when the node cannot be reached.
    """


@hookspec
def bootkit_step_event(event: StepEvent) -> None:
    """Observe a step starting, started, failing, stopping or stopped.

    Called from the thread that ran the step; keep it quick and never raise.
    """


@hookspec
def bootkit_blueprint_event(event: BlueprintEvent) -> None:
    """Observe a blueprint changing state (starting, running, stopping, stopped, failed)."""


@hookspec
def bootkit_child_restart(event: ChildRestart) -> None:
    """Observe a child blueprint about to restart after a fault, before the backoff wait."""
