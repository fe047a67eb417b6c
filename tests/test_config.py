"""Settings precedence and validation: command line > environment > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootkit import ConfigError, Option
from bootkit.config import Sources, build_settings

PORT = Option("port", "A port.", type=int, default=8000)
NAMES = Option("names", "Names.", multiple=True)
DEBUG = Option("debug", "Debug.", type=bool, default=False)
MODE = Option("mode", "Mode.", choices=("a", "b"), default="a")


def sources(env: dict[str, str] | None = None, file: dict[str, object] | None = None) -> Sources:
    return Sources(env or {}, file or {}, Path("bootkit.toml") if file else None)


def test_default_applies_when_no_source_sets_an_option() -> None:
    s = build_settings(sources(), {}, [PORT, DEBUG, MODE])
    assert (s.option("port"), s.option("debug"), s.option("mode")) == (8000, False, "a")


def test_file_beats_default() -> None:
    assert build_settings(sources(file={"port": 1}), {}, [PORT]).option("port") == 1


def test_environment_beats_file() -> None:
    src = sources(env={"BOOTKIT_PORT": "2"}, file={"port": 1})
    assert build_settings(src, {}, [PORT]).option("port") == 2


def test_command_line_beats_environment() -> None:
    src = sources(env={"BOOTKIT_PORT": "2"}, file={"port": 1})
    assert build_settings(src, {"port": 3}, [PORT]).option("port") == 3


def test_environment_lists_are_comma_separated() -> None:
    src = sources(env={"BOOTKIT_NAMES": "a, b,,c"})
    assert build_settings(src, {}, [NAMES]).option("names") == ("a", "b", "c")


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("off", False)])
def test_environment_booleans(raw: str, value: bool) -> None:
    assert build_settings(sources(env={"BOOTKIT_DEBUG": raw}), {}, [DEBUG]).option("debug") is value


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"BOOTKIT_PORT.*'x' is not a valid int"):
        build_settings(sources(env={"BOOTKIT_PORT": "x"}), {}, [PORT])


def test_wrong_type_in_file_names_the_key() -> None:
    with pytest.raises(ConfigError, match="key 'port': expected int, got str"):
        build_settings(sources(file={"port": "80"}), {}, [PORT])


def test_choice_outside_the_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="'c' is not one of a, b"):
        build_settings(sources(file={"mode": "c"}), {}, [MODE])


def test_unknown_file_key_is_refused_once_options_are_known() -> None:
    with pytest.raises(ConfigError, match="unknown key 'prot'"):
        build_settings(sources(file={"prot": 1}), {}, [PORT], check_unknown=True)


def test_without_records_its_source() -> None:
    s = build_settings(sources(env={"BOOTKIT_WITHOUT": "gossip, mingle"}), {})
    assert [d.describe() for d in s.without] == [
        "--without gossip (environment variable BOOTKIT_WITHOUT)",
        "--without mingle (environment variable BOOTKIT_WITHOUT)",
    ]
    assert s.disabled_by("gossip.peers") is s.without[0]
    assert s.disabled_by("gossipy.peers") is None


def test_plugin_specs_split_into_blocked_and_extra() -> None:
    s = build_settings(sources(), {"plugins": ("no:gossip", "my.module")})
    assert (s.blocked_plugins, s.extra_plugins) == (("gossip",), ("my.module",))


def test_empty_block_spec_is_refused() -> None:
    with pytest.raises(ConfigError, match="-p no: needs a plugin name"):
        build_settings(sources(), {"plugins": ("no:",)})


def test_state_dir_defaults_under_xdg_state_home() -> None:
    s = build_settings(sources(env={"XDG_STATE_HOME": "/tmp/xdg"}), {})
    assert s.state_dir == Path("/tmp/xdg/bootkit")


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Sources.read(tmp_path / "nope.toml")


def test_malformed_config_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bootkit.toml"
    path.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match=r"bootkit.toml") as info:
        Sources.read(path)
    assert "\n" not in str(info.value)


def test_without_and_plugins_add_up_across_sources() -> None:
    src = sources(
        env={"BOOTKIT_WITHOUT": "mingle", "BOOTKIT_PLUGINS": "no:b"},
        file={"without": ["gossip"], "plugins": ["no:a"]},
    )
    s = build_settings(src, {"without": ("heartbeat",), "plugins": ("no:c",)})
    assert [(d.name, d.source) for d in s.without] == [
        ("gossip", "config file bootkit.toml"),
        ("mingle", "environment variable BOOTKIT_WITHOUT"),
        ("heartbeat", "command line"),
    ]
    assert s.blocked_plugins == ("a", "b", "c")
