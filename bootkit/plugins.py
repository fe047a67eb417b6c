"""Find, block, load and register plugins from the ``bootkit`` entry point group.

Policy: a plugin named in ``-p no:NAME`` (or ``plugins = ["no:NAME"]`` in the config
file, or ``BOOTKIT_PLUGINS=no:NAME``) is never imported. A plugin that fails to
import or register is skipped with a ``plugin_load_failed`` warning naming the entry
point and distribution; with ``--strict-plugins`` the command fails instead.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from bootkit import hookspecs
from bootkit.config import Option, Settings
from bootkit.errors import PluginError
from bootkit.events import BlueprintEvent, ChildRestart, StepEvent
from bootkit.log import logger
from bootkit.plan import InstalledStep, Provenance
from bootkit.step import Step

GROUP = "bootkit"


class _Manager(pluggy.PluginManager):
    """Takes every ``bootkit_*`` function as a hook, marked or not (as pytest does), so
    `check_pending` catches a misspelt hook even without ``@hookimpl``."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        # getattr_static, like pluggy: never run a plugin's properties while scanning.
        if (
            opts is None
            and name.startswith(f"{self.project_name}_")
            and inspect.isfunction(inspect.getattr_static(plugin, name, None))
        ):
            return pluggy.HookimplOpts(
                wrapper=False,
                hookwrapper=False,
                optionalhook=False,
                tryfirst=False,
                trylast=False,
                specname=None,
            )
        return opts


@dataclass(frozen=True)
class LoadFailure:
    plugin: str
    distribution: str
    message: str


@dataclass
class Plugins:
    """The registered plugins, with where each came from and what was left out."""

    manager: pluggy.PluginManager
    provenance: dict[str, Provenance] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    failed: list[LoadFailure] = field(default_factory=list)

    def steps(self) -> list[InstalledStep]:
        """Every step class contributed through `bootkit_add_steps`, with provenance."""
        installed: list[InstalledStep] = []
        for impl in self.manager.hook.bootkit_add_steps.get_hookimpls():
            provenance = self.provenance[impl.plugin_name]
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"{provenance.describe()}: bootkit_add_steps raised {type(exc).__name__}: {exc}"
                ) from exc
            for cls in _sequence(result, provenance, "bootkit_add_steps"):
                if not (isinstance(cls, type) and issubclass(cls, Step)):
                    raise PluginError(
                        f"{provenance.describe()}: bootkit_add_steps returned {cls!r}, which "
                        "is not a subclass of bootkit.Step; return step classes"
                    )
                installed.append(InstalledStep(cls, provenance))
        return installed

    def options(self) -> list[Option]:
        """Every option contributed through `bootkit_add_options`, checked for clashes."""
        seen: dict[str, str] = {}
        options: list[Option] = []
        for impl in self.manager.hook.bootkit_add_options.get_hookimpls():
            provenance = self.provenance[impl.plugin_name]
            for option in _sequence(impl.function(), provenance, "bootkit_add_options"):
                if not isinstance(option, Option):
                    raise PluginError(
                        f"{provenance.describe()}: bootkit_add_options returned {option!r}; "
                        "return bootkit.Option instances"
                    )
                if option.name in seen:
                    raise PluginError(
                        f"option {option.name!r} is declared by both {seen[option.name]} and "
                        f"{provenance.describe()}; one of them must rename it"
                    )
                seen[option.name] = provenance.describe()
                options.append(option)
        return sorted(options, key=lambda o: o.name)

    # Observer: forwards lifecycle events to the plugins' hooks.

    def step_event(self, event: StepEvent) -> None:
        self.manager.hook.bootkit_step_event(event=event)

    def blueprint_event(self, event: BlueprintEvent) -> None:
        self.manager.hook.bootkit_blueprint_event(event=event)

    def child_restart(self, event: ChildRestart) -> None:
        self.manager.hook.bootkit_child_restart(event=event)


def load(settings: Settings, *, extra: Sequence[tuple[str, object]] = ()) -> Plugins:
    """Load the installed plugins allowed by `settings`, then `extra` (name, plugin) pairs.

    Raises:
        PluginError: with ``strict_plugins``, any plugin that fails to load; always,
            a misspelt hook or two plugins registered under one name.
    """
    plugins = Plugins(_new_manager())
    blocked = set(settings.blocked_plugins)
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        provenance = _provenance(ep)
        if ep.name in blocked:
            plugins.blocked.append(ep.name)
            logger().debug("plugin_blocked", plugin=ep.name, distribution=provenance.distribution)
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            _fail(
                plugins, settings.strict_plugins, provenance, f"failed to import {ep.value!r}", exc
            )
            continue
        _register(plugins, settings.strict_plugins, provenance, obj)
    for spec in settings.extra_plugins:
        if spec in blocked:
            continue
        try:
            module: ModuleType = importlib.import_module(spec)
        except Exception as exc:
            raise PluginError(
                f"-p {spec}: cannot import module {spec!r}: {type(exc).__name__}: {exc}"
            ) from exc
        _register(plugins, settings.strict_plugins, Provenance(spec, f"-p {spec}", ""), module)
    for name, obj in extra:
        _register(plugins, settings.strict_plugins, Provenance(name, "in-process", ""), obj)
    _check_pending(plugins)
    return plugins


def of(*objects: object) -> Plugins:
    """Plugins made of `objects` (modules or objects with hooks), no entry points read:
    for tests and embedding. Raises: PluginError as `load` does."""
    plugins = Plugins(_new_manager())
    for obj in objects:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        _register(plugins, True, Provenance(name, "in-process", ""), obj)
    _check_pending(plugins)
    return plugins


def _new_manager() -> pluggy.PluginManager:
    manager = _Manager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    # Historic: a plugin registered later still gets to add its hooks.
    manager.hook.bootkit_add_hookspecs.call_historic(kwargs={"pluginmanager": manager})
    return manager


def _check_pending(plugins: Plugins) -> None:
    manager = plugins.manager
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin) or ""
        where = plugins.provenance[name].describe() if name in plugins.provenance else "plugin"
        raise PluginError(
            f"{where}: {exc}; check the hook's spelling against bootkit.hookspecs"
        ) from exc


def _register(plugins: Plugins, strict: bool, provenance: Provenance, obj: object) -> None:
    name = provenance.plugin
    if name in plugins.provenance:
        raise PluginError(
            f"two plugins are named {name!r}: {plugins.provenance[name].describe()} and "
            f"{provenance.describe()}; uninstall one or block it with -p no:{name}"
        )
    try:
        plugins.manager.register(obj, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        _fail(plugins, strict, provenance, "failed to register", exc)
        return
    plugins.provenance[name] = provenance


def _fail(
    plugins: Plugins, strict: bool, provenance: Provenance, what: str, exc: BaseException
) -> None:
    message = (
        f"plugin {provenance.plugin!r} from {provenance.distribution} {provenance.version} "
        f"{what}: {type(exc).__name__}: {exc}"
    )
    if strict:
        raise PluginError(
            f"{message}; fix or uninstall it, or block it with -p no:{provenance.plugin}"
        ) from exc
    plugins.failed.append(LoadFailure(provenance.plugin, provenance.distribution, message))
    logger().warning(
        "plugin_load_failed",
        plugin=provenance.plugin,
        distribution=provenance.distribution,
        error=message,
    )


def _provenance(ep: EntryPoint) -> Provenance:
    dist = ep.dist
    if dist is None:
        return Provenance(ep.name, "unknown distribution", "")
    return Provenance(ep.name, dist.name, dist.version)


def _sequence(result: Any, provenance: Provenance, hook: str) -> Sequence[Any]:
    if result is None:
        return ()
    if isinstance(result, (list, tuple)):
        return result
    raise PluginError(f"{provenance.describe()}: {hook} must return a list, got {result!r}")
