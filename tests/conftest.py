"""Shared fixtures: settings in a temporary state folder, and the real CLI in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from bootkit import Settings
from bootkit.testing import make_settings
from tests.support import IN_CI, Result, RunCLI, cli_env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state")


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCLI:
    """Run ``bootkit ARGS`` in a subprocess (cwd: `tmp_path`) and capture its output."""

    def run(
        *args: str,
        sites: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "bootkit", *args],
            cwd=tmp_path,
            env=cli_env(tmp_path, sites, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    """Path of an external tool; skip without it locally, fail under CI (which installs it)."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            if IN_CI:
                pytest.fail(f"{name} is not installed; .ci/run installs it")
            pytest.skip(f"{name} is not installed")
        return path

    return find
