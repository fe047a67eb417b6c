"""The run record: timings of the last boot and shutdown, kept for `bootkit analyze`.

File: ``<state_dir>/timings.json``, rewritten after boot and after shutdown::

    {"version": 1, "pid": 123, "started_at": 1700000000.0,
     "boot": {"seconds": 0.41, "ok": true, "steps": [STEP, ...]},
     "shutdown": {"seconds": 0.02, "ok": true, "steps": [STEP, ...]} | null,
     "blueprints": {"consumer": {"host": "worker.consumer", "parent": "worker"}, ...}}

    STEP = {"blueprint": "worker", "step": "worker.pool", "wave": 1,
            "offset": 0.12, "seconds": 0.05, "outcome": "started",
            "after": ["worker.timer"]}

`offset` is seconds from the start of the phase to the step's own start; `after`
lists the steps it had to wait for (the plan's edges into it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bootkit.events import BlueprintEvent, ChildRestart, StepEvent, Transition
from bootkit.plan import Plan

FILENAME = "timings.json"
_BEGIN = {Transition.STARTING, Transition.STOPPING}


class Recorder:
    """An observer that times every step and writes the run record."""

    def __init__(self, plan: Plan, state_dir: Path) -> None:
        self.path = state_dir / FILENAME
        self._after: dict[str, list[str]] = {}
        for edge in plan.edges:
            self._after.setdefault(edge.target, [])
            if edge.source not in self._after[edge.target]:
                self._after[edge.target].append(edge.source)
        self._lock = threading.Lock()
        self._began: dict[tuple[str, str], float] = {}
        self._phase_start = time.monotonic()
        self._steps: list[dict[str, Any]] = []
        self._record: dict[str, Any] = {
            "version": 1,
            "pid": os.getpid(),
            "started_at": time.time(),
            "boot": None,
            "shutdown": None,
            # Which step runs each child blueprint, for `bootkit analyze`.
            "blueprints": {
                name: {"host": b.host, "parent": b.parent} for name, b in plan.blueprints.items()
            },
        }

    def begin(self) -> None:
        """Mark the start of a phase (boot or shutdown)."""
        with self._lock:
            self._phase_start = time.monotonic()
            self._steps = []

    def end(self, phase: str, *, ok: bool) -> None:
        """Close the phase and write the file."""
        with self._lock:
            self._record[phase] = {
                "seconds": round(time.monotonic() - self._phase_start, 6),
                "ok": ok,
                "steps": self._steps,
            }
            # Events between phases (child restarts while running) are not this phase's.
            self._steps = []
            data = json.dumps(self._record, indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, data.encode())

    def step_event(self, event: StepEvent) -> None:
        key = (event.blueprint, event.step)
        now = time.monotonic()
        with self._lock:
            if event.transition in _BEGIN:
                self._began[key] = now
                return
            began = self._began.pop(key, now)
            self._steps.append(
                {
                    "blueprint": event.blueprint,
                    "step": event.step,
                    "wave": event.wave,
                    "offset": round(began - self._phase_start, 6),
                    "seconds": round(
                        event.seconds if event.seconds is not None else now - began, 6
                    ),
                    "outcome": event.transition.value,
                    "after": self._after.get(event.step, []),
                }
            )

    def blueprint_event(self, event: BlueprintEvent) -> None:
        pass

    def child_restart(self, event: ChildRestart) -> None:
        pass


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash, even ``kill -9`` or a power cut,
    leaves either the old file or the new one whole: write a temporary file in the same
    folder, flush it to disk, rename it over `path`, flush the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read(state_dir: Path) -> dict[str, Any]:
    """The last run record, as written by `Recorder`."""
    data: dict[str, Any] = json.loads((state_dir / FILENAME).read_text(encoding="utf-8"))
    return data
