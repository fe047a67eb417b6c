"""Plugins as real distributions: discovery, blocking, load failures, options, commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pluggy
import pytest

from bootkit import Context, PluginError, Step, StopReason
from bootkit.hookspecs import hookspec
from bootkit.plugins import of as plugins_of
from bootkit.testing import make_settings, running, write_distribution
from tests.support import RunCLI, one_error_line

LOUD = """
import click

from bootkit import Condition, Option, Settings, Step, hookimpl


class Loud(Step):
    name = "greet.loud"
    blueprint = "greet"

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        volume = settings.option("volume")
        if volume >= 11:
            return Condition.on()
        return Condition.off(f"volume is {volume!r}, below 11")


@hookimpl
def bootkit_add_steps():
    return [Loud]


@hookimpl
def bootkit_add_options():
    return [Option("volume", "How loud to greet.", type=int, default=1)]


@hookimpl
def bootkit_add_commands(cli):
    @click.command("hello", help="Say hello.")
    @click.argument("who")
    def hello(who):
        click.echo(f"hello, {who}")

    cli.add_command(hello)
"""

# Creates a marker file next to itself when imported, to prove it never was.
SPY = """
from pathlib import Path

from bootkit import Step, hookimpl

Path(__file__).with_name("spy-imported").touch()


class Watch(Step):
    name = "spy.watch"
    blueprint = "spy"


@hookimpl
def bootkit_add_steps():
    return [Watch]
"""


def install_loud(site: Path) -> None:
    write_distribution(
        site,
        "loud-greeter",
        version="2.3.1",
        entry_points={"greeter": "loud_greeter"},
        modules={"loud_greeter.py": LOUD},
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site folder holding the `greeter` plugin (distribution loud-greeter 2.3.1)."""
    folder = tmp_path / "site"
    install_loud(folder)
    return folder


def step_names(graph_json: str) -> list[str]:
    return [s["name"] for s in json.loads(graph_json)["steps"]]


# -- discovery and blocking --------------------------------------------------------


def test_steps_lists_plugin_distribution_and_version(run_cli: RunCLI, site: Path) -> None:
    result = run_cli("steps", sites=[site])

    assert result.returncode == 0, result.stderr
    rows = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]
    assert rows[0] == ["STEP", "BLUEPRINT", "PLUGIN", "DISTRIBUTION", "VERSION", "STATUS"]
    assert [
        "greet.loud",
        "greet",
        "greeter",
        "loud-greeter",
        "2.3.1",
        "disabled: its condition: volume is 1, below 11",
    ] in rows


@pytest.mark.parametrize("how", ["command line", "environment", "config file"])
def test_blocked_plugin_is_never_imported(
    run_cli: RunCLI, site: Path, tmp_path: Path, how: str
) -> None:
    write_distribution(
        site, "spy-dist", entry_points={"spy": "spy_plugin"}, modules={"spy_plugin.py": SPY}
    )
    marker = site / "spy-imported"
    args: list[str] = []
    env: dict[str, str] = {}
    config = tmp_path / "bootkit.toml"
    if how == "command line":
        args = ["-p", "no:spy"]
    elif how == "environment":
        env = {"BOOTKIT_PLUGINS": "no:spy"}
    else:
        config.write_text('plugins = ["no:spy"]\n')

    blocked = run_cli(*args, "graph", "--json", sites=[site], env=env)

    assert blocked.returncode == 0, blocked.stderr
    assert not marker.exists()
    assert step_names(blocked.stdout) == ["greet.loud"]
    config.unlink(missing_ok=True)
    unblocked = run_cli("graph", "--json", sites=[site])
    assert marker.exists()
    assert step_names(unblocked.stdout) == ["greet.loud", "spy.watch"]


def test_module_named_with_p_is_loaded_as_a_plugin(run_cli: RunCLI, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "local_steps.py").write_text(SPY)

    result = run_cli("-p", "local_steps", "steps", "--json", sites=[site])

    assert result.returncode == 0, result.stderr
    assert [(s["name"], s["plugin"], s["distribution"]) for s in json.loads(result.stdout)] == [
        ("spy.watch", "local_steps", "-p local_steps")
    ]


def test_module_named_with_p_that_is_missing_is_a_one_line_error(run_cli: RunCLI) -> None:
    result = run_cli("-p", "no_such_module_here", "steps")

    assert result.returncode == 2
    assert "no_such_module_here" in one_error_line(result.stderr)


# -- load failures -----------------------------------------------------------------


@pytest.fixture
def broken_site(site: Path) -> Path:
    """`site` plus the plugin `broken` (broken-dist 0.3), which raises when imported."""
    write_distribution(
        site,
        "broken-dist",
        version="0.3",
        entry_points={"broken": "broken_plugin"},
        modules={"broken_plugin.py": "raise RuntimeError('no config for you')\n"},
    )
    return site


def test_plugin_failing_to_import_is_skipped_with_a_warning(
    run_cli: RunCLI, broken_site: Path
) -> None:
    result = run_cli("steps", sites=[broken_site])

    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "plugin_load_failed" in line]
    assert "plugin=broken" in warning
    assert "distribution=broken-dist" in warning
    assert "RuntimeError: no config for you" in warning
    assert "greet.loud" in result.stdout


def test_strict_plugins_fails_on_a_plugin_that_cannot_import(
    run_cli: RunCLI, broken_site: Path
) -> None:
    result = run_cli("--strict-plugins", "steps", sites=[broken_site])

    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "plugin 'broken' from broken-dist 0.3 failed to import 'broken_plugin'" in line
    assert "RuntimeError: no config for you" in line
    assert result.stdout == ""


@pytest.mark.parametrize("marked", [True, False], ids=["hookimpl", "unmarked"])
def test_misspelt_hook_fails_the_load(run_cli: RunCLI, site: Path, marked: bool) -> None:
    source = "from bootkit import hookimpl\n\n\n"
    source += "@hookimpl\n" if marked else ""
    source += "def bootkit_add_step():\n    return []\n"
    write_distribution(
        site, "typo-dist", entry_points={"typo": "typo_plugin"}, modules={"typo_plugin.py": source}
    )

    result = run_cli("steps", sites=[site])

    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "unknown hook 'bootkit_add_step'" in line
    assert "plugin 'typo' (typo-dist 1.0)" in line


# -- options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "env", "file", "seen"),
    [
        (["--volume", "4"], "3", "volume = 2", "4"),
        ([], "3", "volume = 2", "3"),
        ([], None, "volume = 2", "2"),
        ([], None, None, "1"),
    ],
    ids=["cli-over-env", "env-over-file", "file-over-default", "default"],
)
def test_plugin_option_precedence_reaches_the_step_condition(
    run_cli: RunCLI,
    site: Path,
    tmp_path: Path,
    cli: list[str],
    env: str | None,
    file: str | None,
    seen: str,
) -> None:
    if file is not None:
        (tmp_path / "bootkit.toml").write_text(file + "\n")

    result = run_cli(
        "why", *cli, "greet.loud", sites=[site], env={"BOOTKIT_VOLUME": env} if env else {}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"greet.loud: disabled (its condition: volume is {seen}, below 11), blueprint greet"
    )


@pytest.mark.parametrize(
    ("args", "enabled"),
    [
        (["graph", "--json"], '"status": "enabled"'),
        (["steps", "--json"], '"status": "enabled"'),
        (["why", "greet.loud"], "greet.loud: enabled"),
    ],
    ids=["graph", "steps", "why"],
)
def test_plugin_option_is_a_flag_of_plan_commands(
    run_cli: RunCLI, site: Path, args: list[str], enabled: str
) -> None:
    result = run_cli(*args, "--volume", "11", sites=[site])

    assert result.returncode == 0, result.stderr
    assert enabled in result.stdout
    assert "below 11" not in result.stdout


def test_plugin_option_value_is_checked(run_cli: RunCLI, site: Path) -> None:
    result = run_cli("steps", sites=[site], env={"BOOTKIT_VOLUME": "loud"})

    assert result.returncode == 2
    assert "BOOTKIT_VOLUME: 'loud' is not a valid int" in one_error_line(result.stderr)


def test_unknown_config_key_is_a_one_line_error(
    run_cli: RunCLI, site: Path, tmp_path: Path
) -> None:
    (tmp_path / "bootkit.toml").write_text('volume = 3\ncolour = "red"\n')

    result = run_cli("steps", sites=[site])

    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "unknown key 'colour'" in line
    assert "bootkit.toml" in line


# -- commands ----------------------------------------------------------------------


def test_plugin_command_runs(run_cli: RunCLI, site: Path) -> None:
    result = run_cli("hello", "world", sites=[site])

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello, world\n"


def test_plugin_command_is_listed_in_help(run_cli: RunCLI, site: Path) -> None:
    result = run_cli("--help", sites=[site])

    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+hello\s+Say hello\.$", result.stdout, re.MULTILINE), result.stdout


# -- hooks that plugins add for each other ------------------------------------------


class _SpecsOfGossip:
    """Plays a plugin that declares a hook of its own (as bootkit-gossip does)."""

    class Specs:
        @staticmethod
        @hookspec
        def bootkit_peer_lost(peer: str) -> None:
            """A peer stopped answering."""

    def bootkit_add_hookspecs(self, pluginmanager: pluggy.PluginManager) -> None:
        pluginmanager.add_hookspecs(_SpecsOfGossip.Specs)


class _Listener:
    """Plays a third plugin implementing that hook; registered before its spec exists."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def bootkit_peer_lost(self, peer: str) -> None:
        self.lost.append(peer)


class _Announce(Step):
    name = "test.announce"
    blueprint = "main"

    def start(self, ctx: Context) -> None:
        ctx.hook.bootkit_peer_lost(peer="w1@host")

    def stop(self, ctx: Context, reason: StopReason) -> None:
        pass


def test_a_plugin_adds_a_hook_that_other_plugins_implement_and_steps_call(tmp_path: Path) -> None:
    listener = _Listener()
    settings = make_settings(tmp_path)
    with running(_Announce, settings=settings, plugins=[listener, _SpecsOfGossip()]):
        assert listener.lost == ["w1@host"]


def test_an_implementation_of_a_hook_nobody_declares_fails_the_load() -> None:
    with pytest.raises(PluginError, match="bootkit_peer_lost"):
        plugins_of(_Listener())
