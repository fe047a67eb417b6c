"""The whole comparison in one command: every benchmark in turn, bootkit against its
peers, and bench/RESULTS.md rewritten with their tables and a summary of the targets.

    uv run --no-sync python bench/run.py [--out bench/RESULTS.md] [--only NAME ...]

Sizes are chosen so that the run takes 15 to 18 minutes on 2 cores; each script can
be run alone with bigger ones (see bench/README.md). A script that fails is reported
in the file with its exit code and the end of its error output, and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from peers import peer_python, version

BENCH = Path(__file__).resolve().parent
LIMIT = 900.0  # seconds one script may take


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    args: tuple[str, ...]


SUITE = (
    Part(
        "throughput",
        "Worker throughput on RabbitMQ",
        # More, shorter rounds: this machine's speed swings by 2x from minute to
        # minute, and a median of many alternations is what evens that out.
        ("throughput.py", "--n", "5000", "--rounds", "6"),
    ),
    Part(
        "throughput-redis",
        "Worker throughput on Redis",
        ("throughput.py", "--n", "4000", "--rounds", "2", "--broker", "redis://127.0.0.1:6379/11"),
    ),
    Part(
        "latency",
        "Task round trip",
        ("latency.py", "--n", "300", "--warmup", "30", "--rounds", "2"),
    ),
    Part("boot", "Boot to ready and SIGTERM to exit", ("boot.py", "--rounds", "3")),
    Part("graph", "Cold CLI and the kernel", ("graph.py", "--rounds", "5")),
    Part("memory", "Worker memory", ("memory.py", "--n", "2000", "--rounds", "1")),
)


@dataclass
class Outcome:
    part: Part
    command: str
    seconds: float
    code: int
    output: str
    errors: str


def run_part(part: Part) -> Outcome:
    argv = [sys.executable, str(BENCH / part.args[0]), *part.args[1:]]
    shown = shlex.join(
        ["uv", "run", "--no-sync", "python", f"bench/{part.args[0]}", *part.args[1:]]
    )
    print(f"== {part.name}: {shown}", file=sys.stderr, flush=True)
    began = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=LIMIT, check=False)
        code, output, errors = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = -1
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        errors = f"did not finish within {LIMIT:.0f} s"
    seconds = time.monotonic() - began
    print(f"   {seconds:.0f} s, exit {code}", file=sys.stderr, flush=True)
    return Outcome(part, shown, seconds, code, output, errors)


def targets(outcome: Outcome) -> list[str]:
    """The verdict lines a script prints (they start with "target")."""
    return [
        line.strip() for line in outcome.output.splitlines() if line.lstrip().startswith("target")
    ]


def write(outcomes: list[Outcome], out: Path, total: float) -> None:
    peer = peer_python()
    versions = subprocess.run(
        [
            str(peer),
            "-c",
            "import celery, dramatiq; print(celery.__version__, dramatiq.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    lines = [
        "# Latest results",
        "",
        f"Written by `uv run --no-sync python bench/run.py` on "
        f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}, in {total / 60:.1f} min.",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}; "
        f"bootkit {version('bootkit')}, bootkit-amqp-consumer {version('bootkit-amqp-consumer')}, "
        f"kombu {version('kombu')}, amqp {version('amqp')}; peers Celery {versions[0]}, "
        f"Dramatiq {versions[1]}. Brokers: RabbitMQ and Redis on loopback.",
        "",
        "## Targets",
        "",
    ]
    for outcome in outcomes:
        verdicts = targets(outcome)
        if outcome.code != 0:
            verdicts.append(f"the script failed (exit {outcome.code}); see its section")
        lines += [f"- {outcome.part.title}:"] + [f"  - {v}" for v in verdicts or ["no target"]]
    for outcome in outcomes:
        lines += [
            "",
            f"## {outcome.part.title}",
            "",
            f"`{outcome.command}` ({outcome.seconds:.0f} s)",
            "",
        ]
        lines += ["```", outcome.output.rstrip(), "```"]
        if outcome.code != 0:
            tail = "\n".join(outcome.errors.rstrip().splitlines()[-15:])
            lines += ["", f"Failed with exit {outcome.code}:", "", "```", tail, "```"]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument(
        "--only", nargs="+", choices=[p.name for p in SUITE], help="run just these parts"
    )
    options = parser.parse_args()
    peer_python()  # the peers' venv, made once, before anything is timed
    began = time.monotonic()
    outcomes = [run_part(p) for p in SUITE if not options.only or p.name in options.only]
    total = time.monotonic() - began
    write(outcomes, options.out, total)
    print(f"wrote {options.out} after {total / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
