"""Benchmark a worker's boot to ready and SIGTERM to exit: bootkit against Celery 5.7.

Run: uv run --no-sync python bench/boot.py [--rounds 7] [--broker URL]

Four variants, alternated in every round so drift hits all alike: bootkit with every
installed step, bootkit without mingle, gossip and heartbeat, Celery by default, and
Celery ``--without-mingle --without-gossip --without-heartbeat``; each a threads pool
of two on the same broker (RabbitMQ on loopback by default). Boot to ready runs from
just before the process is started to bootkit's ``kernel_ready`` event or Celery's
``ready.`` line; exit from SIGTERM to the end of the process. Celery runs from its own
venv (see bench/peers.py); both sides load bytecode.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peers import PEER_VENV, cold_env, compile_all, peer_python, run, version

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 60.0  # seconds any one boot or exit may take before the run counts as failed
CLUSTER = ("mingle", "gossip", "heartbeat")
CELERY_APP = """\
from celery import Celery

app = Celery("bench")


@app.task(name="bench.noop")
def noop():
    return None
"""


@dataclass
class Variant:
    label: str
    command: list[str]
    is_ready: Callable[[str], bool]
    env: dict[str, str]
    boot: list[float] = field(default_factory=list)
    exit: list[float] = field(default_factory=list)
    failed: int = 0


def bootkit_ready(line: str) -> bool:
    return '"kernel_ready"' in line


def celery_ready(line: str) -> bool:
    return line.rstrip().endswith(" ready.")


def once(variant: Variant, cwd: Path) -> None:
    """Start, wait for ready, SIGTERM, wait for the end; record both times."""
    node = f"bench-{uuid.uuid4().hex[:8]}@bench"
    ready = threading.Event()
    began = time.perf_counter()
    proc = subprocess.Popen(
        [*variant.command, "-n", node],
        cwd=cwd,
        env={**variant.env, "BOOTKIT_STATE_DIR": str(cwd / f"state-{node}")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    at: list[float] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not ready.is_set() and variant.is_ready(line):
                at.append(time.perf_counter())
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(DEADLINE):
            variant.failed += 1
            return
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
        variant.boot.append(at[0] - began)
        variant.exit.append(time.perf_counter() - stopping)
    except subprocess.TimeoutExpired:
        variant.failed += 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        reader.join(DEADLINE)


def installed_steps(env: dict[str, str], cwd: Path) -> list[str]:
    done = run([str(Path(sys.executable).parent / "bootkit"), "graph", "--json"], env=env, cwd=cwd)
    return [s["name"] for s in json.loads(done.stdout)["steps"] if s["status"] == "enabled"]


def summary(values: list[float]) -> str:
    if not values:
        return "failed"
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def ratio(ours: list[float], theirs: list[float]) -> str:
    if not ours or not theirs:
        return "n/a"
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the four variants")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()

    peer = peer_python()
    venv_bin = Path(sys.executable).parent
    compile_all(Path(sys.executable), REPO / "bootkit", REPO / "plugins", venv_bin.parent / "lib")
    compile_all(peer, PEER_VENV / "lib")
    env = cold_env()

    with tempfile.TemporaryDirectory(prefix="bootkit-bench-boot-") as folder:
        cwd = Path(folder)
        (cwd / "benchapp.py").write_text(CELERY_APP, encoding="utf-8")
        steps = installed_steps(env, cwd)
        without = [f"--without={n}" for n in CLUSTER if any(s.startswith(f"{n}.") for s in steps)]
        bootkit = [str(venv_bin / "bootkit"), "--log-format", "json", "start"]
        bootkit += ["-P", "threads", "-c", "2", "-b", args.broker]
        celery = [str(PEER_VENV / "bin" / "celery"), "-A", "benchapp", "-b", args.broker]
        celery += ["worker", "-P", "threads", "-c", "2", "-l", "info"]
        celery_env = {**env, "PYTHONPATH": str(cwd)}
        variants = [
            Variant("bootkit, all default steps", bootkit, bootkit_ready, env),
            Variant(
                "bootkit, --without " + "/".join(w.split("=")[1] for w in without),
                bootkit + without,
                bootkit_ready,
                env,
            ),
            Variant("celery, default", celery, celery_ready, celery_env),
            Variant(
                "celery, --without-mingle/gossip/heartbeat",
                celery + [f"--without-{n}" for n in CLUSTER],
                celery_ready,
                celery_env,
            ),
        ]
        for round_number in range(args.rounds + 1):  # round 0 warms caches, not counted
            for variant in variants:
                once(variant, cwd)
                if round_number == 0:
                    variant.boot.clear()
                    variant.exit.clear()

    ours_all, ours_bare, celery_all, celery_bare = variants
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# boot to ready and SIGTERM to exit, {datetime.date.today()}")
    print(f"machine: {os.cpu_count()} cores, load {load}; Python {platform.python_version()}")
    print(
        f"bootkit {version('bootkit')}, bootkit-amqp-consumer {version('bootkit-amqp-consumer')}, "
        f"celery {run([str(peer), '-c', 'import celery; print(celery.__version__)']).stdout.strip()}"
    )
    print(f"broker: {args.broker}; rounds: {args.rounds}; pool: threads x2")
    print(f"bootkit steps on: {', '.join(steps)}")
    print(
        f"command: uv run --no-sync python bench/boot.py --rounds {args.rounds} --broker {args.broker}"
    )
    print()
    print(
        f"| {'variant':<48} | {'boot to ready, median (min-max)':<32} | {'SIGTERM to exit':<32} |"
    )
    print(f"|{'-' * 50}|{'-' * 34}|{'-' * 34}|")
    for v in variants:
        fails = f" ({v.failed} failed)" if v.failed else ""
        print(f"| {v.label + fails:<48} | {summary(v.boot):<32} | {summary(v.exit):<32} |")
    print()
    print(f"boot ratio bootkit/celery, default steps: {ratio(ours_all.boot, celery_all.boot)}")
    print(
        f"boot ratio bootkit/celery, without cluster steps: {ratio(ours_bare.boot, celery_bare.boot)}"
    )
    print(f"exit ratio bootkit/celery, default steps: {ratio(ours_all.exit, celery_all.exit)}")
    met = (
        ours_all.boot
        and celery_all.boot
        and statistics.median(ours_all.boot) <= statistics.median(celery_all.boot) / 3
    )
    print(
        "target: boot to ready with every default step at most a third of Celery's default: "
        + ("met" if met else "NOT met")
    )


if __name__ == "__main__":
    main()
