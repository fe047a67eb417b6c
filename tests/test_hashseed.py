"""The plan is the same in every process, whatever the string hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = r"""
import json
import sys
from pathlib import Path

from bootkit import BlueprintStep, CycleError, Step
from bootkit.testing import make_settings, plan_of


def step(name, blueprint="worker", base=Step, **declared):
    return type("S_" + name.replace(".", "_"), (base,), {"name": name, "blueprint": blueprint, **declared})


steps = [
    # Worker blueprint: many ties in wave 0, fan-in and fan-out after.
    step("zeta.timer"),
    step("alpha.state"),
    step("mu.metrics", wants=("alpha.state", "absent.soft")),
    step("beta.pool.prefork"),
    step("beta.pool.threads", replaces=("beta.pool.prefork",)),
    step("kappa.beat", after=("zeta.timer", "absent.order")),
    step("omega.autoscale", requires=("beta.pool.prefork",), before=("kappa.beat",)),
    step("gamma.hub", requires=("zeta.timer",)),
    step("delta.control", after=("gamma.hub",), before=("absent.later",)),
    step("eta.statedb", requires=("alpha.state",), wants=("gamma.hub",)),
    step("theta.lazy", on_demand=True),
    step("iota.lazy", on_demand=True),
    step("lambda.user", wants=("iota.lazy",)),
    step("nu.one"),
    step("xi.two"),
    step("pi.three"),
    step("rho.four", after=("nu.one", "xi.two", "pi.three")),
    step("sigma.five", after=("rho.four",)),
    step("tau.six", before=("sigma.five",)),
    step("upsilon.off", requires=("zeta.timer",)),
    step("worker.consumer", base=BlueprintStep, hosts="consumer", requires=("gamma.hub",)),
    # Consumer blueprint, run by worker.consumer; some of it reaches up to the worker.
    step("amqp.connection", "consumer"),
    step("amqp.events", "consumer", requires=("amqp.connection",)),
    step("amqp.mingle", "consumer", requires=("amqp.events",)),
    step("amqp.gossip", "consumer", requires=("amqp.mingle",), wants=("eta.statedb",)),
    step("amqp.heartbeat", "consumer", requires=("amqp.events",)),
    step("amqp.tasks", "consumer", requires=("amqp.connection", "beta.pool.prefork")),
    step("amqp.control", "consumer", after=("amqp.tasks",), requires=("delta.control",)),
    step("amqp.loop", "consumer", after=("amqp.tasks", "amqp.control", "amqp.gossip")),
    step("amqp.agent", "consumer", before=("amqp.loop",)),
]
settings = make_settings(Path(sys.argv[1]), without=("upsilon",))
plan = plan_of(*reversed(steps), settings=settings)

cyclic = [
    step("cy.a", after=("cy.c",)),
    step("cy.b", requires=("cy.a",)),
    step("cy.c", wants=("cy.b",)),
    step("cz.a", before=("cz.b",)),
    step("cz.b", after=("cz.c",), before=("cz.a",)),
    step("cz.c", after=("cz.a",)),
    step("cw.self", after=("cw.self",)),
]
try:
    plan_of(*cyclic, settings=settings)
except CycleError as exc:
    cycle_report = [str(exc), exc.cycles]
else:
    raise SystemExit("expected a CycleError")

print(hash("bootkit"), file=sys.stderr)
json.dump(
    {
        "blueprints": {
            name: [bp.host, bp.parent, [list(w) for w in bp.waves]]
            for name, bp in plan.blueprints.items()
        },
        "edges": [
            [e.source, e.target, e.kind.value, e.declared_by, e.declared] for e in plan.edges
        ],
        "steps": [[p.name, p.blueprint, p.status.value, p.reason, p.wave] for p in plan.steps],
        "aliases": sorted(plan.aliases.items()),
        "cycles": cycle_report,
    },
    sys.stdout,
)
"""

SEEDS = ("0", "1", "42", "12345", "random")


def run_with_seed(script: Path, state: Path, seed: str) -> tuple[str, str]:
    """The script's stdout (the plan as JSON) and stderr (this process's hash of a string)."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, str(script), str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr.strip()


def test_plan_and_cycle_report_are_identical_under_every_hash_seed(tmp_path: Path) -> None:
    script = tmp_path / "plan_dump.py"
    script.write_text(SCRIPT, encoding="utf-8")
    outputs = [run_with_seed(script, tmp_path / "state", seed) for seed in SEEDS]

    # The seeds really differ, so equal plans are not an accident of one seed.
    assert len({probe for _, probe in outputs}) == len(SEEDS)
    reference: dict[str, Any] = json.loads(outputs[0][0])
    assert len(reference["steps"]) == 30
    assert reference["cycles"][1] == [["cw.self"], ["cy.a", "cy.b", "cy.c"], ["cz.a", "cz.b"]]
    assert reference["blueprints"]["worker"][2][0] == [
        "alpha.state",
        "beta.pool.threads",
        "iota.lazy",
        "nu.one",
        "pi.three",
        "tau.six",
        "xi.two",
        "zeta.timer",
    ]
    for seed, (output, _) in zip(SEEDS[1:], outputs[1:], strict=True):
        assert output == outputs[0][0], f"PYTHONHASHSEED={seed} gave a different plan"
