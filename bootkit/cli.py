"""The ``bootkit`` command line: graph, steps, why, start, and commands plugins add.

Exit status: 0 ok; 1 a step failed to start, stop or keep running; 2 a user error
(command line, configuration, plugin or graph), printed as one line on stderr;
3 a second signal cut the shutdown short.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bootkit import log as logsetup
from bootkit.config import (
    CORE_OPTIONS,
    LOG_FORMATS,
    LOG_LEVELS,
    Option,
    Settings,
    Sources,
    build_settings,
)
from bootkit.errors import BootkitError, StartError
from bootkit.kernel import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    pass

PLAN_COMMANDS = ("graph", "steps", "why", "start")


class Session:
    """What one invocation needs, loaded once and only when a command asks for it."""

    def __init__(self, group_params: dict[str, Any]) -> None:
        self.group_params = {k: v for k, v in group_params.items() if v not in (None, ())}
        self._sources: Sources | None = None
        self._plugins: Any = None

    @property
    def sources(self) -> Sources:
        if self._sources is None:
            self._sources = Sources.read(self.group_params.get("config"))
        return self._sources

    @property
    def plugins(self) -> Any:
        """The loaded `bootkit.plugins.Plugins` (imported lazily: plugin loading is costly)."""
        if self._plugins is None:
            from bootkit import plugins

            early = build_settings(self.sources, self.group_params)
            logsetup.configure(early.log_level, early.log_format)
            self._plugins = plugins.load(early)
        return self._plugins

    def options(self) -> list[Option]:
        result: list[Option] = self.plugins.options()
        return result

    def settings(self, command_params: dict[str, Any]) -> Settings:
        merged = {**self.group_params, **{k: v for k, v in command_params.items() if v is not None}}
        settings = build_settings(self.sources, merged, self.options(), check_unknown=True)
        logsetup.configure(settings.log_level, settings.log_format)
        self.plugins.manager.hook.bootkit_configure(settings=settings)
        return settings

    def plan(self, settings: Settings, *, apart: bool = False) -> Any:
        from bootkit.plancache import plan_for

        return plan_for(self.plugins.steps(), settings, apart=apart)


def current_settings(params: dict[str, Any] | None = None) -> Settings:
    """The settings of the running command, for commands that plugins add.

    `params` are the command's own values for plugin options (e.g. ``{"broker": url}``);
    the global options, environment and config file supply the rest.
    """
    ctx = click.get_current_context()
    session = ctx.find_object(Session)
    if session is None:
        raise BootkitError("current_settings() is only available inside a bootkit command")
    return session.settings(dict(params or {}))


def _click_option(option: Option) -> click.Option:
    decls = [option.flag] + ([option.short] if option.short else [])
    kwargs: dict[str, Any] = {"help": option.help, "default": None, "metavar": option.metavar}
    if option.type is bool:
        decls = [f"{option.flag}/--no-{option.flag[2:]}", *decls[1:]]
        kwargs.pop("metavar")
    elif option.choices:
        kwargs["type"] = click.Choice(option.choices)
    else:
        kwargs["type"] = option.type
    # The parameter name goes in the declarations: click's second positional is show_default.
    return click.Option([*decls, option.name], multiple=option.multiple, **kwargs)


def _plan_params(session: Session | None) -> list[click.Parameter]:
    params: list[click.Parameter] = [
        _click_option(CORE_OPTIONS[1]),  # --without
        click.Option(
            ["--serial-start/--no-serial-start", "serial_start"],
            default=None,
            help="Start steps one at a time instead of by waves.",
        ),
        click.Option(
            ["--loglevel", "log_level"],
            type=click.Choice(LOG_LEVELS),
            default=None,
            help="Log level (overrides the global option).",
        ),
        click.Option(
            ["--log-format", "log_format"],
            type=click.Choice(LOG_FORMATS),
            default=None,
            help="Log format (overrides the global option).",
        ),
    ]
    if session is not None:
        params += [_click_option(o) for o in session.options()]
    return params


def _split(params: dict[str, Any], keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    own = {k: params.pop(k) for k in keys if k in params}
    return own, params


def _graph(session: Session, params: dict[str, Any]) -> None:
    from bootkit import render

    own, rest = _split(params, ("blueprint", "fmt"))
    settings = session.settings(rest)
    plan = session.plan(settings)
    unknown = [b for b in own["blueprint"] if b not in plan.blueprints]
    if unknown:
        raise BootkitError(
            f"no blueprint named {unknown[0]!r}; installed: {', '.join(sorted(plan.blueprints))}"
        )
    renderers: dict[str, Callable[..., str]] = {
        "text": render.text,
        "dot": render.dot,
        "mermaid": render.mermaid,
        "json": render.as_json,
    }
    click.echo(renderers[own["fmt"]](plan, own["blueprint"]), nl=False)


def _steps(session: Session, params: dict[str, Any]) -> None:
    from bootkit import render

    own, rest = _split(params, ("as_json",))
    plan = session.plan(session.settings(rest))
    if own["as_json"]:
        click.echo(json.dumps(render.as_dict(plan)["steps"], indent=2))
        return
    rows = [("STEP", "BLUEPRINT", "PLUGIN", "DISTRIBUTION", "VERSION", "STATUS")]
    for s in plan.steps:
        status = "enabled" if s.enabled else f"{s.status.value}: {s.reason}"
        p = s.provenance
        rows.append((s.name, s.blueprint, p.plugin, p.distribution, p.version, status))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        click.echo(render.ascii_safe("  ".join([*cells, row[5]])))


def _why(session: Session, params: dict[str, Any]) -> None:
    from bootkit.explain import why

    own, rest = _split(params, ("step",))
    click.echo(why(session.plan(session.settings(rest)), own["step"]), nl=False)


def _start(session: Session, params: dict[str, Any]) -> None:
    from bootkit.events import Fanout
    from bootkit.kernel import Kernel
    from bootkit.notify import Readiness
    from bootkit.shutdown import watch_signals

    settings = session.settings(params)
    plan = session.plan(settings, apart=True)  # networkx stays out of the worker
    # Told to the service manager (NOTIFY_SOCKET) and kept for `bootkit status`.
    readiness = Readiness.from_env(plan, settings.state_dir, session.sources.env)
    kernel = Kernel(
        plan,
        settings,
        observer=Fanout(session.plugins, readiness),
        hook=session.plugins.manager.hook,
    )
    watch_signals(kernel, lambda: session.plugins.manager.hook.bootkit_cold_shutdown(kernel=kernel))
    readiness.kernel_starting()
    try:
        status = kernel.run()
    finally:
        readiness.close()
    if status != EXIT_OK:
        sys.exit(status)


# -- commands that read the state folder only: no plugins, no networkx ----------------


def _state_dir() -> Path:
    ctx = click.get_current_context()
    session = ctx.find_object(Session)
    assert session is not None
    return build_settings(session.sources, session.group_params).state_dir


@click.command("status")
def _status_command() -> None:
    """Exit 0 when the kernel of this state folder runs and is ready, 1 otherwise
    (a container health probe: no plugin is loaded)."""
    from bootkit.notify import status

    ready, line = status(_state_dir())
    click.echo(line, err=not ready)
    if not ready:
        sys.exit(EXIT_FAILURE)


@click.group("analyze")
def _analyze() -> None:
    """Analyze the last boot (or shutdown) from the run record in the state folder."""


_shutdown_flag = click.option(
    "--shutdown", is_flag=True, help="The last shutdown instead of the last boot."
)
_node_flag = click.option(
    "--node",
    default=None,
    metavar="NAME",
    help="Ask the live process NAME (through a plugin that reaches it, e.g. the worker's "
    "remote control) instead of reading the state folder.",
)


def _phase(shutdown: bool, node: str | None) -> Any:
    from bootkit import analyze

    phase = "shutdown" if shutdown else "boot"
    if node is None:
        return analyze.load(_state_dir(), phase)
    session = click.get_current_context().find_object(Session)
    assert session is not None
    record = session.plugins.manager.hook.bootkit_run_record(
        settings=session.settings({}), node=node
    )
    if record is None:
        raise BootkitError(f"--node {node}: no installed plugin can reach a live process")
    return analyze.from_record(record, phase, node)


_json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@_analyze.command("blame")
@_shutdown_flag
@_json_flag
@_node_flag
def _blame(shutdown: bool, as_json: bool, node: str | None) -> None:
    """Steps by the time they took, longest first."""
    from bootkit import analyze

    phase = _phase(shutdown, node)
    if as_json:
        click.echo(analyze.blame_json(phase))
    else:
        click.echo(analyze.blame_text(phase), nl=False)


@_analyze.command("critical-chain")
@_shutdown_flag
@_json_flag
@_node_flag
def _critical_chain(shutdown: bool, as_json: bool, node: str | None) -> None:
    """The chain of waits that decided when each blueprint was ready (or stopped)."""
    from bootkit import analyze

    phase = _phase(shutdown, node)
    if as_json:
        click.echo(analyze.chain_json(phase))
    else:
        click.echo(analyze.chain_text(phase), nl=False)


@_analyze.command("plot")
@_shutdown_flag
@_node_flag
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the SVG here.")
def _plot(shutdown: bool, node: str | None, output: str | None) -> None:
    """An SVG timeline: a bar per step, waves banded, the critical chain in red."""
    from bootkit import analyze

    svg = analyze.plot(_phase(shutdown, node))
    if output is None:
        click.echo(svg, nl=False)
    else:
        Path(output).write_text(svg, encoding="utf-8")


LIGHT_COMMANDS: dict[str, click.Command] = {"analyze": _analyze, "status": _status_command}


def _command(
    name: str,
    session: Session | None,
    run: Callable[[Session, dict[str, Any]], None],
    help: str,
    extra: Sequence[click.Parameter] = (),
) -> click.Command:
    def callback(**params: Any) -> None:
        assert session is not None
        run(session, params)

    return click.Command(
        name, callback=callback, params=[*extra, *_plan_params(session)], help=help
    )


def _builtin(name: str, session: Session | None) -> click.Command:
    if name == "graph":
        fmt = [
            click.Option([f"--{f}", "fmt"], flag_value=f, help=f"Print {f}.", **default)
            for f, default in (
                ("text", {"default": True}),
                ("dot", {}),
                ("mermaid", {}),
                ("json", {}),
            )
        ]
        return _command(
            "graph",
            session,
            _graph,
            "Print the effective boot plan of BLUEPRINT (all when none), in start order.",
            [click.Argument(["blueprint"], nargs=-1), *fmt],
        )
    if name == "steps":
        return _command(
            "steps",
            session,
            _steps,
            "List installed steps: blueprint, plugin, distribution, version, status.",
            [click.Option(["--json", "as_json"], is_flag=True, help="Print JSON.")],
        )
    if name == "why":
        return _command(
            "why",
            session,
            _why,
            "Explain whether STEP runs, where it starts and because of what.",
            [click.Argument(["step"])],
        )
    return _command(
        "start",
        session,
        _start,
        "Start every installed blueprint; run until SIGTERM/SIGINT, then stop in reverse.",
    )


class BootkitGroup(click.Group):
    """Builds commands once plugins are loaded, so plugins can add options and commands."""

    def _session(self, ctx: click.Context) -> Session:
        if not isinstance(ctx.obj, Session):
            ctx.obj = Session(dict(ctx.params))
        return ctx.obj

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        holder = click.Group()
        self._session(ctx).plugins.manager.hook.bootkit_add_commands(cli=holder)
        return dict(holder.commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            extra = self._plugin_commands(ctx)
        except BootkitError:
            extra = {}
        builtin = [*PLAN_COMMANDS, *LIGHT_COMMANDS]
        return [*builtin, *sorted(set(extra) - set(builtin))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if ctx.resilient_parsing:
            if cmd_name in LIGHT_COMMANDS:
                return LIGHT_COMMANDS[cmd_name]
            return _builtin(cmd_name, None) if cmd_name in PLAN_COMMANDS else None
        if cmd_name in PLAN_COMMANDS:
            return _builtin(cmd_name, self._session(ctx))
        if cmd_name in LIGHT_COMMANDS:
            self._session(ctx)
            return LIGHT_COMMANDS[cmd_name]
        return self._plugin_commands(ctx).get(cmd_name)


@click.group(cls=BootkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", type=click.Path(dir_okay=False), help="Config file (default ./bootkit.toml)."
)
@click.option(
    "-p",
    "--plugins",
    "plugins",
    multiple=True,
    metavar="SPEC",
    help="`no:NAME` blocks plugin NAME before import; `MODULE` loads a module as a plugin.",
)
@click.option(
    "--strict-plugins/--no-strict-plugins", default=None, help="Fail when a plugin cannot load."
)
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Folder for run records and state."
)
@click.option("--loglevel", "log_level", type=click.Choice(LOG_LEVELS), help="Log level.")
@click.option("--log-format", "log_format", type=click.Choice(LOG_FORMATS), help="Log format.")
@click.version_option(package_name="bootkit")
def cli(**_: Any) -> None:
    """bootkit: a lifecycle microkernel. Steps come from plugins; the kernel orders,
    starts, supervises and stops them."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and a status."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="bootkit",
            standalone_mode=False,
        )
    except StartError as exc:
        click.echo(f"bootkit: error: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except BootkitError as exc:
        click.echo(f"bootkit: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else EXIT_OK)
