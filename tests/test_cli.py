"""The `bootkit` command line, run for real in subprocesses against installed plugins."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from bootkit.testing import write_distribution
from tests.support import RunCLI, one_error_line

ATLAS = """
from bootkit import Condition, Option, Settings, Step, hookimpl


class Config(Step):
    name = "app.config"
    blueprint = "app"


class Metrics(Step):
    name = "app.metrics"
    blueprint = "app"
    before = ("app.web",)


class Db(Step):
    name = "app.db"
    blueprint = "app"
    requires = ("app.config",)


class Cache(Step):
    name = "app.cache"
    blueprint = "app"
    wants = ("app.config", "app.absent")


class Web(Step):
    name = "app.web"
    blueprint = "app"
    requires = ("app.cache",)
    after = ("app.db",)


class Mail(Step):
    name = "app.mail"
    blueprint = "app"
    requires = ("app.db",)

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        if settings.option("relay") is None:
            return Condition.off("no relay set (caf\\u00e9 \\u2192 closed)")
        return Condition.on()


class Legacy(Step):
    name = "app.legacy"
    blueprint = "app"


class Modern(Step):
    name = "app.modern"
    blueprint = "app"
    replaces = ("app.legacy",)


class Probe(Step):
    name = "ops.probe"
    blueprint = "ops"


@hookimpl
def bootkit_add_steps():
    return [Config, Metrics, Db, Cache, Web, Mail, Legacy, Modern, Probe]


@hookimpl
def bootkit_add_options():
    return [Option("relay", "Mail relay host.", metavar="HOST")]
"""

# The plan of ATLAS: waves, sorted by name within a wave, then the edges in start order.
APP_ORDER = ["app.config", "app.metrics", "app.modern", "app.cache", "app.db", "app.web"]
APP_EDGES = [
    ("app.config", "app.cache", "wants"),
    ("app.config", "app.db", "requires"),
    ("app.metrics", "app.web", "before"),
    ("app.cache", "app.web", "requires"),
    ("app.db", "app.web", "after"),
]
MAIL_REASON_ASCII = r"no relay set (caf\xe9 \u2192 closed)"


@pytest.fixture
def atlas(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_distribution(
        site,
        "atlas-steps",
        version="3.1",
        entry_points={"atlas": "atlas_steps"},
        modules={"atlas_steps.py": ATLAS},
    )
    return site


# -- graph -------------------------------------------------------------------------


def test_graph_json_lists_steps_and_edges_in_start_order(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("graph", "--json", sites=[atlas])

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    app = [s for s in data["steps"] if s["blueprint"] == "app"]
    assert [s["name"] for s in app if s["status"] == "enabled"] == APP_ORDER
    assert [s["position"] for s in app if s["status"] == "enabled"] == list(range(6))
    assert [(e["source"], e["target"], e["kind"]) for e in data["edges"]] == APP_EDGES
    assert {e["distribution"] for e in data["edges"]} == {"atlas-steps"}
    web = next(s for s in app if s["name"] == "app.web")
    assert (web["plugin"], web["distribution"], web["version"], web["wave"]) == (
        "atlas",
        "atlas-steps",
        "3.1",
        2,
    )


def test_graph_json_shows_disabled_and_replaced_steps_with_reasons(
    run_cli: RunCLI, atlas: Path
) -> None:
    result = run_cli("graph", "--json", sites=[atlas])

    steps = {s["name"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["app.mail"]["status"] == "disabled"
    assert steps["app.mail"]["reason"] == "its condition: no relay set (caf\u00e9 \u2192 closed)"
    assert steps["app.legacy"]["status"] == "replaced"
    assert steps["app.modern"]["replaced"] == ["app.legacy"]
    assert result.stdout.isascii()


def test_graph_option_enables_a_step(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("graph", "--json", "--relay", "smtp.example", sites=[atlas])

    steps = {s["name"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["app.mail"]["status"] == "enabled"
    assert steps["app.mail"]["wave"] == 2


def test_graph_text_shows_waves_disabled_reason_and_edges(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("graph", sites=[atlas])

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.isascii()
    assert re.search(r"wave 2\n\s+app\.web\s+atlas \(atlas-steps 3\.1\)", out), out
    assert re.search(r"app\.mail\s+disabled: its condition: " + re.escape(MAIL_REASON_ASCII), out)
    for source, target, kind in APP_EDGES:
        assert f"{source} -> {target}  [{kind}, by " in out
    listed = [
        line.split()[0] for line in out.splitlines() if line.startswith("  ") and "->" in line
    ]
    assert listed == [source for source, _, _ in APP_EDGES]


def test_graph_dot_renders_to_svg(
    run_cli: RunCLI, atlas: Path, require_tool: Callable[[str], str]
) -> None:
    dot = require_tool("dot")
    result = run_cli("graph", "--dot", sites=[atlas])
    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii()
    for source, target, kind in APP_EDGES:
        assert f'"{source}" -> "{target}" [label="{kind}"' in result.stdout

    rendered = subprocess.run(
        [dot, "-Tsvg"], input=result.stdout, capture_output=True, text=True, timeout=60, check=False
    )

    assert rendered.returncode == 0, rendered.stderr
    svg = ET.fromstring(rendered.stdout)
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    titles = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")}
    assert f"disabled: its condition: {MAIL_REASON_ASCII}" in texts
    assert set(APP_ORDER) <= titles
    assert {f"{source}->{target}" for source, target, _ in APP_EDGES} <= titles


def test_graph_mermaid_declares_every_enabled_step_and_edge(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("graph", "--mermaid", "app", sites=[atlas])

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("flowchart")
    assert out.isascii()
    nodes = set(re.findall(r"^\s+(s_\w+)\[\"", out, re.MULTILINE))
    edges = re.findall(r"^\s+(s_\w+) (?:==>|-\.->|-->)\|(\w+)\| (s_\w+)$", out, re.MULTILINE)

    def ident(name: str) -> str:
        return "s_" + name.replace(".", "_")

    assert {ident(name) for name in APP_ORDER} <= nodes
    assert ident("app.mail") in nodes
    assert MAIL_REASON_ASCII in out
    assert edges == [(ident(s), kind, ident(t)) for s, t, kind in APP_EDGES]


def test_graph_blueprint_argument_filters(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("graph", "--json", "ops", sites=[atlas])

    data = json.loads(result.stdout)
    assert [b["name"] for b in data["blueprints"]] == ["ops"]
    assert [s["name"] for s in data["steps"]] == ["ops.probe"]
    assert data["edges"] == []


def test_graph_unknown_blueprint_is_a_one_line_error(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("graph", "nope", sites=[atlas])

    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "'nope'" in line
    assert "app, ops" in line


# -- why ---------------------------------------------------------------------------


def test_why_explains_an_enabled_step(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("why", "app.web", sites=[atlas])

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "app.web: enabled, blueprint app, wave 2, position 6 of 6"
    assert "  from plugin 'atlas' (atlas-steps 3.1), class atlas_steps.Web" in lines
    assert "  starts after app.metrics [before, declared by app.metrics]" in lines
    assert "  starts after app.db [after, declared by app.web]" in lines


def test_why_explains_a_disabled_step(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("why", "app.mail", sites=[atlas])

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"app.mail: disabled (its condition: {MAIL_REASON_ASCII}), blueprint app"
    )


def test_why_explains_a_replaced_step(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("why", "app.legacy", sites=[atlas])

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "app.legacy is replaced by app.modern"
    assert lines[1].startswith("app.modern: enabled")
    assert "  replaces app.legacy" in lines


def test_why_unknown_step_suggests_the_closest_name(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("why", "app.wbe", sites=[atlas])

    assert result.returncode == 2
    assert "did you mean 'app.web'?" in one_error_line(result.stderr)


# -- cycles ------------------------------------------------------------------------

CYCLE_A = """
from bootkit import Step, hookimpl


class One(Step):
    name = "x.one"
    blueprint = "x"
    requires = ("x.two",)
    before = ("x.three",)


@hookimpl
def bootkit_add_steps():
    return [One]
"""

CYCLE_B = """
from bootkit import Step, hookimpl


class Two(Step):
    name = "x.two"
    blueprint = "x"
    after = ("x.four",)


class Three(Step):
    name = "x.three"
    blueprint = "x"


class Four(Step):
    name = "x.four"
    blueprint = "x"
    wants = ("x.three",)


@hookimpl
def bootkit_add_steps():
    return [Two, Three, Four]
"""


def test_cycle_across_plugins_names_every_edge(run_cli: RunCLI, tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_distribution(site, "cyc-a", entry_points={"cyca": "cyc_a"}, modules={"cyc_a.py": CYCLE_A})
    write_distribution(
        site, "cyc-b", version="2.0", entry_points={"cycb": "cyc_b"}, modules={"cyc_b.py": CYCLE_B}
    )

    result = run_cli("graph", sites=[site])

    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "Traceback" not in result.stderr
    for edge in (
        "x.two -> x.one [requires, declared by x.one in plugin 'cyca' (cyc-a 1.0)]",
        "x.one -> x.three [before, declared by x.one in plugin 'cyca' (cyc-a 1.0)]",
        "x.three -> x.four [wants, declared by x.four in plugin 'cycb' (cyc-b 2.0)]",
        "x.four -> x.two [after, declared by x.two in plugin 'cycb' (cyc-b 2.0)]",
    ):
        assert edge in line


def test_start_help_shows_plugin_options(run_cli: RunCLI, atlas: Path) -> None:
    result = run_cli("start", "--help", sites=[atlas])

    assert result.returncode == 0, result.stderr
    assert re.search(r"--relay HOST\s+Mail relay host\.", result.stdout), result.stdout
    assert "[default: (" not in result.stdout  # a parameter name shown as its default
