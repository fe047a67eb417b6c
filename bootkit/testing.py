"""Helpers for testing steps and plugins: real plans, real blueprints, real distributions.

from bootkit.testing import make_settings, running

def test_cache_starts(tmp_path):
    with running(CacheStep, settings=make_settings(tmp_path)) as kernel:
        assert kernel.blueprints[0].state is State.RUNNING
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from structlog.testing import capture_logs

from bootkit.config import Disable, Settings
from bootkit.events import BlueprintEvent, ChildRestart, StepEvent, Transition
from bootkit.graph import resolve
from bootkit.kernel import Kernel
from bootkit.plan import InstalledStep, Plan, Provenance
from bootkit.step import Step

__all__ = [
    "EventLog",
    "capture_logs",
    "make_settings",
    "plan_of",
    "running",
    "write_distribution",
]

TEST_PROVENANCE = Provenance("test", "test-distribution", "0")


def make_settings(
    state_dir: Path,
    *,
    without: Sequence[str] = (),
    serial_start: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings for a test, with run records kept in `state_dir`."""
    return Settings(
        state_dir=state_dir,
        without=tuple(Disable(name, "test") for name in without),
        serial_start=serial_start,
        options=MappingProxyType(dict(options or {})),
    )


def plan_of(
    *steps: type[Step], settings: Settings, provenance: Provenance = TEST_PROVENANCE
) -> Plan:
    """Resolve `steps` as if one plugin contributed them."""
    return resolve([InstalledStep(cls, provenance) for cls in steps], settings)


@contextmanager
def running(
    *steps: type[Step], settings: Settings, observer: Any = None, plugins: Sequence[object] = ()
) -> Iterator[Kernel]:
    """Start a kernel running `steps`; stop it when the block ends. `plugins` (modules or
    objects with hooks) are registered, so steps reach their hooks through ``ctx.hook``."""
    from bootkit.plugins import of

    hook = of(*plugins).manager.hook if plugins else None
    kernel = Kernel(plan_of(*steps, settings=settings), settings, observer, hook=hook)
    kernel.start()
    try:
        yield kernel
    finally:
        kernel.stop()


class EventLog:
    """An observer that keeps every event, for assertions; thread-safe."""

    def __init__(self) -> None:
        self.events: list[StepEvent | BlueprintEvent | ChildRestart] = []
        self._changed = threading.Condition()

    def step_event(self, event: StepEvent) -> None:
        self._add(event)

    def blueprint_event(self, event: BlueprintEvent) -> None:
        self._add(event)

    def child_restart(self, event: ChildRestart) -> None:
        self._add(event)

    def _add(self, event: StepEvent | BlueprintEvent | ChildRestart) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def steps(self, *transitions: Transition) -> list[str]:
        """Names of steps that went through any of `transitions`, in order."""
        with self._changed:
            return [
                e.step
                for e in self.events
                if isinstance(e, StepEvent) and e.transition in transitions
            ]

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until `predicate(self)` holds; False when `timeout` passed first."""
        with self._changed:
            return bool(self._changed.wait_for(lambda: predicate(self), timeout))


def write_distribution(
    site: Path,
    name: str,
    *,
    version: str = "1.0",
    entry_points: Mapping[str, str],
    modules: Mapping[str, str],
) -> Path:
    """Install a distribution into the folder `site`, as an installer would lay it out.

    `entry_points` maps plugin names to ``module`` or ``module:object`` in the group
    ``bootkit``; `modules` maps relative file paths (``my_plugin.py``) to source.
    Put `site` on ``sys.path`` (or ``PYTHONPATH``) to make it visible.
    """
    site.mkdir(parents=True, exist_ok=True)
    for relative, source in modules.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    dist_info = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[bootkit]", *(f"{ep} = {target}" for ep, target in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dist_info / "RECORD").write_text("", encoding="utf-8")
    return dist_info
