"""Benchmark the plan: resolve time against networkx alone, and `bootkit graph --dot` cold.

Run: uv run --no-sync python bench/graph.py [--rounds 7] [--repeats 5]

Part 1 times `bootkit.graph.resolve` (validation and ordering) on random DAGs of
100, 1,000 and 10,000 steps (about two `requires` per step, fixed seed) next to
networkx alone building the same DiGraph and running `topological_generations`.
Part 2 times cold processes, alternating bootkit / networkx import / Celery so drift
hits all three alike. Celery runs from its own venv (created once, reused), never
from bootkit's. Both sides are byte-compiled first and the timed processes run
without PYTHONDONTWRITEBYTECODE, so both load bytecode.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
from peers import PEER_VENV, cold_env, compile_all, peer_python, run, version

from bootkit.graph import resolve
from bootkit.plan import InstalledStep, Provenance
from bootkit.step import Step
from bootkit.testing import make_settings

REPO = Path(__file__).resolve().parents[1]
SIZES = (100, 1_000, 10_000)
SEED = 20240601
PROVENANCE = Provenance("bench", "bench-distribution", "0")


# -- part 1: resolve vs networkx ------------------------------------------------------


@dataclass(frozen=True)
class RandomDag:
    names: list[str]
    edges: list[tuple[str, str]]  # (required, requirer)
    steps: list[InstalledStep]


def make_step(step_name: str, requires_: tuple[str, ...]) -> type[Step]:
    class Generated(Step):
        name = step_name
        blueprint = "bench"
        requires = requires_

    return Generated


def random_dag(size: int, rng: random.Random) -> RandomDag:
    """`size` steps; step i requires up to two earlier steps; listed in shuffled order."""
    names = [f"bench.s{i}" for i in range(size)]
    edges: list[tuple[str, str]] = []
    steps: list[InstalledStep] = []
    for index, name in enumerate(names):
        required = tuple(names[j] for j in rng.sample(range(index), min(2, index)))
        edges.extend((dep, name) for dep in required)
        steps.append(InstalledStep(make_step(name, required), PROVENANCE))
    rng.shuffle(steps)
    return RandomDag(names, edges, steps)


def networkx_alone(dag: RandomDag) -> int:
    """Build the same DiGraph and sort it, with the collector paused as `resolve` does."""
    paused = gc.isenabled()
    gc.disable()
    try:
        graph = nx.DiGraph()
        graph.add_nodes_from(dag.names)
        graph.add_edges_from(dag.edges)
        return len(list(nx.topological_generations(graph)))
    finally:
        if paused:
            gc.enable()


def seconds(call: Callable[[], object]) -> float:
    gc.collect()  # start each sample from the same heap, not from earlier garbage
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def bench_resolve(repeats: int) -> list[tuple[int, int, float, float]]:
    """Rows of (steps, edges, bootkit median s, networkx median s)."""
    settings = make_settings(Path(tempfile.gettempdir()) / "bootkit-bench-state")
    rng = random.Random(SEED)
    rows = []
    for size in SIZES:
        dag = random_dag(size, rng)
        plan = resolve(dag.steps, settings)
        waves = len(plan.blueprints["bench"].waves)
        if waves != networkx_alone(dag):
            raise SystemExit(f"{size} steps: bootkit found {waves} waves, networkx another count")
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(repeats):
            ours.append(seconds(functools.partial(resolve, dag.steps, settings)))
            theirs.append(seconds(functools.partial(networkx_alone, dag)))
        rows.append((size, len(dag.edges), statistics.median(ours), statistics.median(theirs)))
    return rows


# -- part 2: cold processes --------------------------------------------------------------


def bench_cold(commands: Mapping[str, list[str]], rounds: int, cwd: Path) -> dict[str, list[float]]:
    env = cold_env()
    times: dict[str, list[float]] = {label: [] for label in commands}
    for round_number in range(rounds + 1):  # round 0 warms the page cache, not counted
        for label, command in commands.items():
            begin = time.perf_counter()
            subprocess.run(
                command,
                cwd=cwd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
                check=True,
            )
            if round_number:
                times[label].append(time.perf_counter() - begin)
    return times


# -- report ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="cold-start rounds (A B C each)")
    parser.add_argument("--repeats", type=int, default=5, help="resolve repeats per size")
    args = parser.parse_args(argv)

    venv_bin = Path(sys.executable).parent
    peer = peer_python()
    compile_all(Path(sys.executable), REPO / "bootkit", REPO / "plugins", venv_bin.parent / "lib")
    compile_all(peer, PEER_VENV / "lib")
    celery_version = run(
        [str(peer), "-c", "import importlib.metadata as m; print(m.version('celery'))"]
    ).stdout.strip()
    commands = {
        "bootkit graph --dot": [str(venv_bin / "bootkit"), "graph", "--dot"],
        "python -c 'import networkx'": [str(venv_bin / "python"), "-c", "import networkx"],
        "celery graph bootsteps": [str(PEER_VENV / "bin" / "celery"), "graph", "bootsteps"],
    }

    print("bootkit graph benchmark")
    print(f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine:  nproc={len(os.sched_getaffinity(0))}, {platform.machine()}, "
        f"{platform.system()}, load average {load}"
    )
    print(f"python:   {platform.python_implementation()} {platform.python_version()}")
    print(
        f"versions: bootkit {version('bootkit')}, networkx {nx.__version__}, "
        f"pluggy {version('pluggy')}, click {version('click')}, "
        f"structlog {version('structlog')}; peer celery {celery_version}"
    )
    print(f"command:  {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print()

    rows = bench_resolve(args.repeats)
    print(f"1. resolve (validate + order), random DAG, seed {SEED}, median of {args.repeats}")
    print("   networkx: the same DiGraph built and sorted by topological_generations, gc paused")
    print(f"{'steps':>8} {'edges':>8} {'bootkit s':>11} {'networkx s':>11} {'ratio':>7}")
    for size, edges, ours, theirs in rows:
        print(f"{size:>8,} {edges:>8,} {ours:>11.4f} {theirs:>11.4f} {ours / theirs:>6.1f}x")
    largest = next(ours for size, _, ours, _ in rows if size == 10_000)
    verdict = "met" if largest < 0.25 else "NOT met"
    print(f"   target: 10,000 steps in under 0.25 s: {verdict} ({largest:.3f} s)")
    print()

    with tempfile.TemporaryDirectory(prefix="bootkit-bench-") as cwd:
        times = bench_cold(commands, args.rounds, Path(cwd))
    print(
        f"2. cold wall time, {args.rounds} rounds alternating A B C (after one warm-up round), "
        "bytecode on, cwd: an empty temporary folder"
    )
    print(f"{'':>3} {'command':<30} {'median s':>9} {'min s':>7} {'max s':>7}")
    for letter, (label, samples) in zip("ABC", times.items(), strict=True):
        print(
            f"{letter:>3} {label:<30} {statistics.median(samples):>9.3f} "
            f"{min(samples):>7.3f} {max(samples):>7.3f}"
        )
    for label, command in commands.items():
        print(f"    {label}: {shlex.join(command)}")
    ratio = statistics.median(times["bootkit graph --dot"]) / statistics.median(
        times["celery graph bootsteps"]
    )
    print(f"bootkit/celery (medians): {ratio:.2f}")
    verdict = "met" if ratio <= 1.0 else "NOT met"
    print(f"target: cold `bootkit graph --dot` no slower than `celery graph bootsteps`: {verdict}")


if __name__ == "__main__":
    main()
