"""Benchmark a worker's boot to ready and SIGTERM to exit: bootkit against Celery 5.7.

Run: uv run --no-sync python bench/boot.py [--rounds 7] [--broker URL]

Four variants, alternated bootkit / Celery in every round so drift hits all alike:
bootkit with every installed step, Celery by default, bootkit ``--without`` mingle,
gossip and heartbeat (those of them installed), and Celery ``--without-mingle
--without-gossip --without-heartbeat``; each a threads pool of two on the same broker
(RabbitMQ on loopback by default, e.g. ``--broker redis://127.0.0.1:6379/11``). Boot to
ready runs from just before the process is started to bootkit's ``kernel_ready`` event
or Celery's ``<node> ready.`` line; exit from SIGTERM to the end of the process. Every
run has its own node name, and every variant consumes a queue of its own (deleted at
the end), so the workers never take tasks meant for anything else on the broker. One
warm-up round is not counted. Celery runs from its own venv (see bench/peers.py); both
sides are byte-compiled first and run without PYTHONDONTWRITEBYTECODE.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from kombu.connection import Connection
from peers import PEER_VENV, cold_env, compile_all, peer_python, print_context, run, version

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 30.0  # seconds any one boot or exit may take before the run counts as failed
CLUSTER = ("mingle", "gossip", "heartbeat")
HOST = platform.node() or "bench"
CELERY_APP = """\
from celery import Celery

app = Celery("benchapp")


@app.task(name="bench.noop")
def noop():
    return None
"""


@dataclass
class Variant:
    label: str
    command: list[str]  # without `-n NODE`, which every run gets anew
    env: dict[str, str]
    is_ready: Callable[[str, str], bool]  # (line, node)
    queue: str
    expected_steps: frozenset[str] = frozenset()  # bootkit: the plan's enabled steps
    boot: list[float] = field(default_factory=list)
    exit: list[float] = field(default_factory=list)
    codes: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    step_mismatches: list[str] = field(default_factory=list)


def bootkit_ready(line: str, node: str) -> bool:
    return '"kernel_ready"' in line and json_event(line).get("event") == "kernel_ready"


def celery_ready(line: str, node: str) -> bool:
    return line.rstrip().endswith(f"{node} ready.")


def json_event(line: str) -> dict[str, object]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def started_steps(lines: Sequence[str]) -> frozenset[str]:
    """The steps a bootkit run logged as started, from its JSON log."""
    names = set()
    for line in lines:
        event = json_event(line)
        if event.get("event") == "step_started" and isinstance(event.get("step"), str):
            names.add(str(event["step"]))
    return frozenset(names)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the session the run was started in: that process and its children only."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label)


def once(variant: Variant, cwd: Path, counted: bool) -> None:
    """Start, wait for ready, SIGTERM, wait for the end; record both times."""
    node = f"bench-{uuid.uuid4().hex[:12]}@{HOST}"
    head: list[str] = []  # every line up to ready
    tail: collections.deque[str] = collections.deque(maxlen=15)  # for failure reports
    ready_at: list[float] = []
    ready = threading.Event()  # set on the ready line, or when the output ends
    exited = threading.Event()
    began = time.perf_counter()
    proc = subprocess.Popen(
        [*variant.command, "-n", node],
        cwd=cwd,
        # One state folder per variant, as a deployed worker keeps its own: boots after
        # the warm-up find their plan kept there (bootkit.plancache).
        env={**variant.env, "BOOTKIT_STATE_DIR": str(cwd / f"state-{_slug(variant.label)}")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a kill reaches only this run
    )

    def read() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:  # read to the end, so the worker never blocks on a pipe
                if not ready_at:
                    if variant.is_ready(line, node):
                        ready_at.append(time.perf_counter())
                        ready.set()
                    else:
                        head.append(line)
                tail.append(line)
        finally:
            ready.set()

    def reap() -> None:  # a blocking wait: exact, where Popen.wait(timeout) polls
        proc.wait()
        exited.set()

    reader = threading.Thread(target=read, daemon=True)
    reaper = threading.Thread(target=reap, daemon=True)
    reader.start()
    reaper.start()
    failure = ""
    try:
        ready.wait(DEADLINE)
        if not ready_at:
            failure = (
                f"exited {proc.returncode} before ready"
                if exited.wait(0.5)
                else f"not ready within {DEADLINE:.0f} s"
            )
            return
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        if not exited.wait(DEADLINE):
            failure = f"still running {DEADLINE:.0f} s after SIGTERM"
            return
        stopped = time.perf_counter()
        if counted:
            variant.boot.append(ready_at[0] - began)
            variant.exit.append(stopped - stopping)
            variant.codes[proc.returncode] += 1
            if variant.expected_steps:
                seen = started_steps(head)
                if seen != variant.expected_steps:
                    missing = sorted(variant.expected_steps - seen)
                    extra = sorted(seen - variant.expected_steps)
                    variant.step_mismatches.append(f"missing {missing}, extra {extra}")
    finally:
        if not exited.is_set():
            kill_group(proc)
            exited.wait(DEADLINE)
        kill_group(proc)  # anything it left behind in its group (none expected)
        reader.join(DEADLINE)
        if failure:
            text = "".join(tail).rstrip()
            print(f"  {variant.label}: {failure}; last output:\n{text}", file=sys.stderr)
            if counted:
                variant.failures.append(failure)


def plan(bootkit: Path, env: dict[str, str], cwd: Path, *without: str) -> dict[str, str]:
    """Step name -> status (`enabled` or why not) from `bootkit graph --json`."""
    flags = [f for name in without for f in ("--without", name)]
    done = run([str(bootkit), "graph", "--json", *flags], env=env, cwd=cwd)
    return {str(s["name"]): str(s["status"]) for s in json.loads(done.stdout)["steps"]}


def delete_queues(broker: str, marker: str, names: Sequence[str]) -> None:
    """Remove the bench's queues (and the exchanges Celery names after them).

    On Redis kombu keeps a queue as a list and its bindings in sets, which a fresh
    connection's queue_delete does not find: there every key and member that carries
    `marker` (this run's id, in every queue name) goes instead.
    """
    if broker.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(broker)
        ours = marker.encode()
        for key in list(client.scan_iter(match="_kombu.*", count=1000)):
            kind = client.type(key)
            if kind == b"set" and (members := [m for m in client.smembers(key) if ours in m]):
                client.srem(key, *members)
            elif kind == b"zset" and (
                members := [
                    m for m in client.zrange(key, 0, -1) if isinstance(m, bytes) and ours in m
                ]
            ):
                client.zrem(key, *members)
        if keys := list(client.scan_iter(match=f"*{marker}*", count=1000)):
            client.delete(*keys)
        return
    with Connection(broker, connect_timeout=5) as conn:
        for name in names:
            for delete in ("queue_delete", "exchange_delete"):
                # a fresh channel each: an error (absent, say) closes the channel it hit
                with contextlib.suppress(Exception), conn.channel() as channel:
                    getattr(channel, delete)(name)


def summary(values: list[float]) -> tuple[str, str]:
    if not values:
        return "failed", "-"
    return f"{statistics.median(values):.3f}", f"{min(values):.3f}-{max(values):.3f}"


def ratio(ours: list[float], theirs: list[float]) -> float | None:
    if not ours or not theirs:
        return None
    return statistics.median(ours) / statistics.median(theirs)


def shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the four variants")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: types.FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through `once`, which kills its worker

    signal.signal(signal.SIGTERM, on_term)
    load_before = os.getloadavg()
    peer = peer_python()
    venv_bin = Path(sys.executable).parent
    bootkit_exe = venv_bin / "bootkit"
    compile_all(Path(sys.executable), REPO / "bootkit", REPO / "plugins", venv_bin.parent / "lib")
    compile_all(peer, PEER_VENV / "lib")
    env = cold_env()
    run_id = uuid.uuid4().hex[:8]

    with tempfile.TemporaryDirectory(prefix="bootkit-bench-boot-") as folder:
        cwd = Path(folder)
        (cwd / "benchapp.py").write_text(CELERY_APP, encoding="utf-8")
        compile_all(peer, cwd)
        installed = plan(bootkit_exe, env, cwd)
        namespaces = {name.split(".", 1)[0] for name in installed}
        without = [name for name in CLUSTER if name in namespaces]
        bare_plan = plan(bootkit_exe, env, cwd, *without)
        steps_all = frozenset(n for n, s in installed.items() if s == "enabled")
        steps_bare = frozenset(n for n, s in bare_plan.items() if s == "enabled")
        queues = [f"bench-boot-{run_id}-{i}" for i in range(4)]

        def bootkit(queue: str, *extra: str) -> list[str]:
            command = [str(bootkit_exe), "--log-format", "json", "start", "-P", "threads"]
            return [*command, "-c", "2", "-b", args.broker, "-Q", queue, *extra]

        def celery(queue: str, *extra: str) -> list[str]:
            command = [str(PEER_VENV / "bin" / "celery"), "-A", "benchapp", "-b", args.broker]
            return [
                *command,
                "worker",
                "-P",
                "threads",
                "-c",
                "2",
                "-Q",
                queue,
                "-l",
                "info",
                *extra,
            ]

        celery_env = {**env, "PYTHONPATH": str(cwd)}
        without_flags = [f for name in without for f in ("--without", name)]
        variants = [
            Variant(
                "bootkit, all default steps",
                bootkit(queues[0]),
                env,
                bootkit_ready,
                queues[0],
                steps_all,
            ),
            Variant("celery, default", celery(queues[1]), celery_env, celery_ready, queues[1]),
            Variant(
                "bootkit, " + (" ".join(without_flags) or "no cluster steps installed"),
                bootkit(queues[2], *without_flags),
                env,
                bootkit_ready,
                queues[2],
                steps_bare,
            ),
            Variant(
                "celery, --without-mingle/gossip/heartbeat",
                celery(queues[3], *(f"--without-{name}" for name in CLUSTER)),
                celery_env,
                celery_ready,
                queues[3],
            ),
        ]
        try:
            for round_number in range(args.rounds + 1):  # round 0 warms caches, not counted
                for variant in variants:
                    once(variant, cwd, counted=round_number > 0)
        finally:
            try:
                delete_queues(args.broker, f"bench-boot-{run_id}-", queues)
            except Exception as exc:  # the broker is gone: say what is left, carry on
                print(f"note: could not delete {queues}: {exc!r}", file=sys.stderr)

    celery_version = run([str(peer), "-c", "import celery; print(celery.__version__)"])
    ours_all, celery_all, ours_bare, celery_bare = variants

    print(f"# worker boot to ready and SIGTERM to exit, bootkit vs Celery ({run_id})")
    print_context(load_before)
    print(
        f"versions: bootkit {version('bootkit')}, "
        f"bootkit-amqp-consumer {version('bootkit-amqp-consumer')}, "
        f"bootkit-gossip {version('bootkit-gossip')}, "
        f"bootkit-heartbeat {version('bootkit-heartbeat')}; "
        f"peer celery {celery_version.stdout.strip()}"
    )
    print(f"broker:   {args.broker}")
    print(
        f"rounds:   {args.rounds} counted (after 1 warm-up), alternating the four variants; "
        f"pool threads x2; deadline {DEADLINE:.0f} s per wait"
    )
    print(f"command:  {shlex.join(['uv', 'run', '--no-sync', 'python', *sys.argv])}")
    print(f"bootkit steps on (all default): {', '.join(sorted(steps_all))}")
    print(
        f"bootkit --without passed: {' '.join(without_flags) or 'none (no such step installed)'}"
        f"; steps on: {', '.join(sorted(steps_bare))}"
    )
    print("worker commands (each run adds -n bench-<uuid>@host):")
    for variant in variants:
        print(f"  {variant.label}: {shlex.join(variant.command)}")
    print()
    header = ("variant", "boot median s", "boot min-max", "exit median s", "exit min-max", "ok")
    widths = (max(len(v.label) for v in variants), 13, 13, 13, 13, 14)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for v in variants:
        boot_median, boot_range = summary(v.boot)
        exit_median, exit_range = summary(v.exit)
        codes = ",".join(f"{c}" for c in sorted(v.codes))
        ok = f"{len(v.boot)}/{args.rounds} exit {codes or '-'}"
        cells = (v.label, boot_median, boot_range, exit_median, exit_range, ok)
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")
    print()
    print(
        f"bootkit/celery, default vs default:  boot {shown(ratio(ours_all.boot, celery_all.boot))}, "
        f"exit {shown(ratio(ours_all.exit, celery_all.exit))}"
    )
    print(
        f"bootkit/celery, without vs without:  boot {shown(ratio(ours_bare.boot, celery_bare.boot))}, "
        f"exit {shown(ratio(ours_bare.exit, celery_bare.exit))}"
    )
    for v in variants:
        for mismatch in v.step_mismatches:
            print(f"note: a run of '{v.label}' started other steps than planned: {mismatch}")
        for failure in v.failures:
            print(f"note: a run of '{v.label}' failed: {failure}")
    target = ratio(ours_all.boot, celery_all.boot)
    met = target is not None and target <= 1 / 3 and not ours_all.failures
    exact = "n/a" if target is None else f"{target:.3f}"
    print(
        "target: boot to ready with all default steps at most a third of Celery's default: "
        f"{'met' if met else 'not met'} (ratio {exact}, limit 0.333)"
    )


if __name__ == "__main__":
    main()
