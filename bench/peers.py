"""What the benchmarks share: the peers' own environment (Celery, never installed into
bootkit's), byte-compiling both sides, and a clean environment for timed processes."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

PEER_VENV = Path(tempfile.gettempdir()) / "bootkit-bench-peers"
CELERY = "celery[redis]==5.7.0"  # the extra brings what kombu's Redis transport imports
PEERS = (CELERY, "dramatiq[rabbitmq,redis]>=2,<3", "redis>=5")
STAMP = PEER_VENV / "bootkit-bench-peers.txt"  # the PEERS it was made with


def run(
    command: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        check=True,
        text=True,
        capture_output=True,
        timeout=600,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )


def peer_python() -> Path:
    """The peer venv's python with Celery and Dramatiq installed, created on first use."""
    python = PEER_VENV / "bin" / "python"
    stamp = STAMP.read_text(encoding="utf-8") if STAMP.exists() else ""
    if stamp != "\n".join(PEERS) or not python.exists():
        uv = shutil.which("uv")
        if uv is None:
            raise SystemExit("uv is not on PATH; it creates the venv for the peers")
        base = os.path.realpath(sys.executable)  # the interpreter behind bootkit's venv
        print(f"making {PEER_VENV} with {', '.join(PEERS)} (once)", file=sys.stderr)
        run([uv, "venv", "--quiet", "--allow-existing", str(PEER_VENV), "--python", base])
        run([uv, "pip", "install", "--quiet", "--python", str(python), *PEERS])
        STAMP.write_text("\n".join(PEERS), encoding="utf-8")
    return python


def compile_all(python: Path, *folders: Path) -> None:
    """Byte-compile `folders` for `python`, so the timed runs load bytecode."""
    existing = [str(f) for f in folders if f.exists()]
    proc = subprocess.run(
        [str(python), "-m", "compileall", "-q", *existing],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:  # some distributions ship files that do not compile
        print(f"note: compileall for {python} reported errors (ignored)", file=sys.stderr)


def cold_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTKIT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_context(load_before: tuple[float, float, float]) -> None:
    """The date, machine and interpreter lines every benchmark's report starts with."""
    cores = f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)"
    loads = [", ".join(f"{x:.2f}" for x in values) for values in (load_before, os.getloadavg())]
    print(f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"machine:  {cores}, {platform.machine()}, {platform.system()}; load average "
        f"{loads[0]} before, {loads[1]} after"
    )
    print(f"python:   {platform.python_implementation()} {platform.python_version()}")


def prepare(repo: Path) -> Path:
    """Set a benchmark up: SIGTERM unwinds (so workers are stopped and queues deleted),
    both sides are byte-compiled, and the peers' python is returned."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    peer = peer_python()
    compile_all(Path(sys.executable), repo / "bootkit", repo / "plugins")
    compile_all(peer, PEER_VENV / "lib")
    return peer
