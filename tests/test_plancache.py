"""Plans kept between runs: read back only for the same steps and settings, never
for a failure, and a command that finds its plan kept does not import networkx."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bootkit import Settings, Status, Step, UnknownStepError
from bootkit.config import Disable
from bootkit.graph import resolve
from bootkit.plan import InstalledStep, Provenance
from bootkit.plancache import plan_for

HERE = Provenance("cache-test", "cache-test-dist", "1.0")


class First(Step):
    name = "cache.first"
    blueprint = "main"


class Second(Step):
    name = "cache.second"
    blueprint = "main"
    requires = ("cache.first",)


class Orphan(Step):
    name = "cache.orphan"
    blueprint = "main"
    requires = ("cache.missing",)


def installed(*classes: type[Step]) -> list[InstalledStep]:
    return [InstalledStep(cls, HERE) for cls in classes]


def kept(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "plans").glob("*.pickle"))


def test_the_same_steps_and_settings_read_the_kept_plan_back(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    first = plan_for(installed(First, Second), settings)
    assert len(kept(tmp_path)) == 1
    again = plan_for(installed(First, Second), settings)
    assert again == first == resolve(installed(First, Second), settings)


def test_a_changed_without_is_resolved_again(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    plan_for(installed(First, Second), settings)
    off = dataclasses.replace(settings, without=(Disable("cache.second", "command line"),))
    plan = plan_for(installed(First, Second), off)
    assert plan.step("cache.second").status is Status.DISABLED
    assert len(kept(tmp_path)) == 2


def test_a_changed_step_set_is_resolved_again(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    plan_for(installed(First), settings)
    plan = plan_for(installed(First, Second), settings)
    assert plan.enabled("main")[-1].name == "cache.second"


def test_a_failing_resolution_is_never_kept(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    for _ in range(2):
        with pytest.raises(UnknownStepError):
            plan_for(installed(First, Orphan), settings)
    assert kept(tmp_path) == []


def test_an_unreadable_kept_plan_is_resolved_again(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    plan_for(installed(First, Second), settings)
    (path,) = kept(tmp_path)
    path.write_bytes(b"not a pickle")
    plan = plan_for(installed(First, Second), settings)
    assert plan == resolve(installed(First, Second), settings)


def test_a_command_that_finds_its_plan_kept_does_not_import_networkx(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
    env["BOOTKIT_STATE_DIR"] = str(tmp_path / "state")
    command = [sys.executable, "-X", "importtime", "-m", "bootkit", "graph", "--dot"]
    runs = [
        subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
        for _ in range(2)
    ]
    imported = [{line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()} for r in runs]
    assert "networkx" in imported[0]
    assert "networkx" not in imported[1]
    assert runs[0].stdout == runs[1].stdout


APART = """
import sys
from pathlib import Path

from bootkit import Settings, Step, UnknownStepError
from bootkit.plan import InstalledStep, Provenance
from bootkit.plancache import plan_for
from bootkit.plugins import load


class Orphan(Step):
    name = "apart.orphan"
    blueprint = "main"
    requires = ("apart.missing",)


settings = Settings(state_dir=Path(sys.argv[1]))
steps = load(settings).steps()
plan = plan_for(steps, settings, apart=True)
print("networkx" in sys.modules)
orphan = [InstalledStep(Orphan, Provenance("apart", "apart-dist", "1"))]
try:
    plan_for(orphan, settings, apart=True)
except UnknownStepError as exc:
    print(str(exc).split(";")[0])
from bootkit.graph import resolve

print(plan == resolve(steps, settings), len(plan.steps))
"""


def run_apart(script: str, state: Path) -> list[str]:
    """Run `script` in a fresh interpreter (no networkx imported yet); its output lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
    run = subprocess.run(
        [sys.executable, "-c", script, str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.splitlines()


def test_a_plan_resolved_apart_leaves_networkx_out_and_errors_as_they_are(
    tmp_path: Path,
) -> None:
    lines = run_apart(APART, tmp_path / "state")
    assert lines[0] == "False", "networkx was imported by the process that asked for the plan"
    assert lines[1] == (
        "step apart.orphan (blueprint main, plugin 'apart' (apart-dist 1)) requires "
        "'apart.missing', which no installed plugin provides"
    )
    equal, count = lines[2].split()
    assert equal == "True"
    assert int(count) > 10  # the workspace's worker steps


def test_a_plan_resolved_apart_survives_an_ignored_sigchld(tmp_path: Path) -> None:
    # Some supervisors start their children with SIGCHLD ignored: the kernel then reaps
    # the resolving child itself, and waiting for it finds nothing to wait for.
    script = APART.replace(
        "import sys\n", "import signal, sys\nsignal.signal(signal.SIGCHLD, signal.SIG_IGN)\n", 1
    )
    assert run_apart(script, tmp_path / "state")[0] == "False"
