"""Resolved plans kept between runs, so a command whose steps and settings have not
changed since the last run skips resolution, and with it the import of networkx
(a quarter of a second of every worker boot, and 12 MiB it would keep for good).

The key is a digest of everything `graph.resolve` reads: each installed step's class
(module and qualified name), declarations and provenance, its condition under these
settings, the ``--without`` entries, and the resolver's own source file. Only plans
that resolved are kept, so every error is reported fresh. A cache that cannot be
read or written is skipped: the plan is resolved as if it were not there. Plans are
pickled (they name step classes, which are imported already) under the state
folder, which only its owner can write.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pickle
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from bootkit.config import Settings
from bootkit.plan import InstalledStep, Plan
from bootkit.record import write_atomically

KEEP = 8  # plans kept per state folder, the most recently written
FORMAT = 1  # bump when Plan's pickled shape changes


def plan_for(
    installed: Sequence[InstalledStep], settings: Settings, *, apart: bool = False
) -> Plan:
    """The plan of `installed` under `settings`: the kept one, or resolved now.

    With `apart`, a plan that is not kept is resolved in a forked child where it can
    be, so that a long-lived process (the worker) never imports networkx: it stays as
    lean on its first start as on the next ones.

    Raises:
        GraphError: as `graph.resolve` does; nothing has started.
    """
    try:
        key = digest(installed, settings)
    except Exception:  # a condition that raises: resolve reports it properly
        key = None
    folder = settings.state_dir / "plans"
    if key is not None:
        with contextlib.suppress(Exception):
            kept = pickle.loads((folder / f"{key}.pickle").read_bytes())
            if isinstance(kept, Plan):
                return kept
    plan = _resolve_apart(installed, settings) if apart else None
    if plan is None:
        from bootkit.graph import resolve

        plan = resolve(installed, settings)
    if key is not None:
        with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):
            _store(folder, key, pickle.dumps(plan, pickle.HIGHEST_PROTOCOL))
    return plan


def _resolve_apart(installed: Sequence[InstalledStep], settings: Settings) -> Plan | None:
    """The plan, resolved in a forked child that sends it back pickled; None when that
    cannot be done (no fork, other threads running, networkx imported already, a plan
    that does not pickle, a resolution that fails): the caller then resolves here and
    reports any error itself, as if this had not been tried."""
    if not hasattr(os, "fork") or threading.active_count() > 1 or "networkx" in sys.modules:
        return None
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: no cleanup of the parent's state on the way out
        status = 1
        try:
            os.close(read_end)
            from bootkit.graph import resolve

            data = pickle.dumps(resolve(installed, settings), pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already (SIGCHLD ignored): what it sent decides
        status = 0
    if status != 0 or not data:
        return None
    try:
        plan = pickle.loads(data)
    except Exception:
        return None
    return plan if isinstance(plan, Plan) else None


def digest(installed: Sequence[InstalledStep], settings: Settings) -> str:
    """What the plan of `installed` under `settings` depends on, as a hex digest."""
    resolver = importlib.util.find_spec("bootkit.graph")
    origin = resolver.origin if resolver is not None else None
    stat = os.stat(origin) if origin else None
    parts: list[object] = [FORMAT, origin, stat and (stat.st_mtime_ns, stat.st_size)]
    parts.append(tuple(settings.without))
    for item in installed:
        cls = item.cls
        condition = cls.condition(settings)
        parts.append(
            (
                cls.__module__,
                cls.__qualname__,
                item.provenance,
                getattr(cls, "name", None),
                getattr(cls, "blueprint", None),
                getattr(cls, "requires", None),
                getattr(cls, "after", None),
                getattr(cls, "before", None),
                getattr(cls, "wants", None),
                getattr(cls, "replaces", None),
                getattr(cls, "on_demand", None),
                getattr(cls, "hosts", None),
                getattr(cls, "start_timeout", None),
                getattr(cls, "stop_timeout", None),
                condition.enabled,
                condition.reason,
            )
        )
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _store(folder: Path, key: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / f"{key}.pickle", data)
    kept = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in kept[KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()
