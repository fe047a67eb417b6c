"""Settings: command line over environment over config file over defaults, frozen.

This is the only module that reads ``os.environ``. Settings are built twice per
command: once before plugins load (to know which to block) and once after, when
plugins have declared their options.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bootkit.errors import ConfigError

ENV_PREFIX = "BOOTKIT_"
DEFAULT_CONFIG_FILE = "bootkit.toml"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("console", "json")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Option:
    """A setting a plugin adds; it is read from the command line, environment and file.

    The command line flag is ``--<name with dashes>`` plus `short`; the environment
    variable is ``BOOTKIT_<NAME>``; the config file key is `name`.
    """

    name: str
    help: str
    type: type[str] | type[int] | type[float] | type[bool] = str
    default: Any = None
    multiple: bool = False
    short: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def envvar(self) -> str:
        return ENV_PREFIX + self.name.upper()


@dataclass(frozen=True)
class Disable:
    """One request to turn steps off: a step name or a namespace (``gossip``)."""

    name: str
    source: str

    def matches(self, step_name: str) -> bool:
        return step_name == self.name or step_name.startswith(self.name + ".")

    def describe(self) -> str:
        return f"--without {self.name} ({self.source})"


# The kernel's own settings, with how each is spelled in the file and environment.
CORE_OPTIONS: tuple[Option, ...] = (
    Option("state_dir", "Folder for run records and local state.", metavar="PATH"),
    Option(
        "without",
        "Turn off a step, or every step of a namespace (repeatable).",
        multiple=True,
        metavar="STEP",
    ),
    Option(
        "plugins",
        "`no:NAME` blocks the plugin NAME before import; `MODULE` loads a module as a plugin.",
        multiple=True,
        short="-p",
        metavar="SPEC",
    ),
    Option("strict_plugins", "Fail when a plugin cannot be loaded.", type=bool, default=False),
    Option("serial_start", "Start steps one at a time instead of by waves.", type=bool),
    Option("log_level", "Log level.", default="info", choices=LOG_LEVELS, metavar="LEVEL"),
    Option("log_format", "Log output format.", default="console", choices=LOG_FORMATS),
)
_CORE_NAMES = frozenset(o.name for o in CORE_OPTIONS) | {"config"}


def default_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bootkit"


@dataclass(frozen=True)
class Sources:
    """The raw environment and config file, read once per process."""

    env: Mapping[str, str]
    file: Mapping[str, Any]
    file_path: Path | None

    @classmethod
    def read(cls, config: str | Path | None = None) -> Sources:
        """Read ``os.environ`` and the config file (`config`, ``$BOOTKIT_CONFIG`` or ./bootkit.toml)."""
        env = dict(os.environ)
        explicit = config or env.get(ENV_PREFIX + "CONFIG")
        path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
        if not path.is_file():
            if explicit:
                raise ConfigError(f"config file {path} does not exist; fix --config/BOOTKIT_CONFIG")
            return cls(env, {}, None)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        return cls(env, data, path)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, frozen; flows from the CLI to blueprints to steps."""

    state_dir: Path
    without: tuple[Disable, ...] = ()
    blocked_plugins: tuple[str, ...] = ()
    extra_plugins: tuple[str, ...] = ()
    strict_plugins: bool = False
    serial_start: bool = False
    log_level: str = "info"
    log_format: str = "console"
    config_file: Path | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def option(self, name: str, default: Any = None) -> Any:
        """The value of a plugin option, or `default` when it has none."""
        value = self.options.get(name)
        return default if value is None else value

    def disabled_by(self, step_name: str) -> Disable | None:
        """The first ``--without`` entry that turns `step_name` off, if any."""
        for disable in self.without:
            if disable.matches(step_name):
                return disable
        return None


def build_settings(
    sources: Sources,
    cli: Mapping[str, Any],
    options: Sequence[Option] = (),
    *,
    check_unknown: bool = False,
) -> Settings:
    """Merge command line `cli` values over environment, file and defaults.

    Raises:
        ConfigError: a value has the wrong type, or (with `check_unknown`) the
            file has a key no option declares.
    """
    resolver = _Resolver(sources, cli)
    core = {o.name: resolver.value(o) for o in CORE_OPTIONS}
    plugin_values = {o.name: resolver.value(o) for o in options if o.name not in _CORE_NAMES}
    if check_unknown:
        known = _CORE_NAMES | plugin_values.keys()
        unknown = sorted(k for k in sources.file if k not in known)
        if unknown:
            raise ConfigError(
                f"config file {sources.file_path}: unknown key {unknown[0]!r}; no installed "
                "plugin declares it (is its plugin blocked or missing?)"
            )
    blocked, extra = _split_plugin_specs([v for v, _ in resolver.accumulated(CORE_OPTIONS[2])])
    state_dir = core["state_dir"]
    return Settings(
        state_dir=Path(state_dir) if state_dir else default_state_dir(sources.env),
        without=tuple(resolver.disables()),
        blocked_plugins=blocked,
        extra_plugins=extra,
        strict_plugins=bool(core["strict_plugins"]),
        serial_start=bool(core["serial_start"]),
        log_level=core["log_level"],
        log_format=core["log_format"],
        config_file=sources.file_path,
        options=MappingProxyType(plugin_values),
    )


def _split_plugin_specs(specs: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    blocked: list[str] = []
    extra: list[str] = []
    for spec in specs:
        if spec.startswith("no:"):
            name = spec[3:].strip()
            if not name:
                raise ConfigError("-p no: needs a plugin name, e.g. -p no:gossip")
            blocked.append(name)
        elif spec.strip():
            extra.append(spec.strip())
    return tuple(blocked), tuple(extra)


class _Resolver:
    """Looks one option up in each source, highest precedence first."""

    def __init__(self, sources: Sources, cli: Mapping[str, Any]) -> None:
        self.sources = sources
        self.cli = cli

    def value(self, option: Option) -> Any:
        given = self.cli.get(option.name)
        if given is not None and given != ():
            return tuple(given) if option.multiple else given
        raw_env = self.sources.env.get(option.envvar)
        if raw_env is not None:
            return _coerce(option, raw_env, f"environment variable {option.envvar}")
        if option.name in self.sources.file:
            return _check_file_value(option, self.sources.file[option.name], self.sources)
        if option.multiple:
            return tuple(option.default or ())
        return option.default

    def accumulated(self, option: Option) -> list[tuple[Any, str]]:
        """Every value of a list option from the file, the environment and the command
        line, in that order, each with where it came from: these lists add up."""
        found: list[tuple[Any, str]] = []
        if option.name in self.sources.file:
            where = f"config file {self.sources.file_path}"
            found += [
                (v, where)
                for v in _check_file_value(option, self.sources.file[option.name], self.sources)
            ]
        raw_env = self.sources.env.get(option.envvar)
        if raw_env is not None:
            where = f"environment variable {option.envvar}"
            found += [(v, where) for v in _coerce(option, raw_env, where)]
        found += [(v, "command line") for v in self.cli.get(option.name) or ()]
        return found

    def disables(self) -> list[Disable]:
        return [Disable(name, where) for name, where in self.accumulated(CORE_OPTIONS[1])]


def _coerce(option: Option, raw: str, where: str) -> Any:
    if option.multiple:
        return tuple(
            _coerce_one(option, item.strip(), where) for item in raw.split(",") if item.strip()
        )
    return _coerce_one(option, raw.strip(), where)


def _coerce_one(option: Option, raw: str, where: str) -> Any:
    if option.type is bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{where}: {raw!r} is not a boolean; use 1/0, true/false, yes/no")
    try:
        value = option.type(raw)
    except ValueError:
        raise ConfigError(f"{where}: {raw!r} is not a valid {option.type.__name__}") from None
    _check_choice(option, value, where)
    return value


def _check_file_value(option: Option, value: Any, sources: Sources) -> Any:
    where = f"config file {sources.file_path}, key {option.name!r}"
    items = value if option.multiple else [value]
    if option.multiple and not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
    for item in items:
        expected: tuple[type, ...] = (int, float) if option.type is float else (option.type,)
        if not isinstance(item, expected) or (option.type is not bool and isinstance(item, bool)):
            raise ConfigError(
                f"{where}: expected {option.type.__name__}, got {type(item).__name__} {item!r}"
            )
        _check_choice(option, item, where)
    return tuple(items) if option.multiple else value


def _check_choice(option: Option, value: Any, where: str) -> None:
    if option.choices is not None and value not in option.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(option.choices)}")
