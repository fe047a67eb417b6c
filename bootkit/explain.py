"""`bootkit why STEP`: whether a step runs, where it starts, and because of what."""

from __future__ import annotations

import difflib

from bootkit.errors import UnknownStepError
from bootkit.plan import Plan, PlannedStep, Status
from bootkit.render import ascii_safe


def why(plan: Plan, name: str) -> str:
    """Explain `name` in `plan`.

    Raises:
        UnknownStepError: no installed step has that name.
    """
    try:
        step = plan.step(name)
    except KeyError:
        known = sorted({s.name for s in plan.steps})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; `bootkit steps` lists them"
        raise UnknownStepError(f"no installed step is named {name!r}{hint}") from None
    lines: list[str] = []
    if step.name != name:
        lines.append(f"{name} is replaced by {step.name}")
    lines.append(f"{step.name}: {_status(plan, step)}")
    lines.append(f"  from {step.provenance.describe()}, class {_qualname(step)}")
    for replaced in step.replaced:
        lines.append(f"  replaces {replaced}")
    for other in plan.steps:
        if other.name == step.name and other.status is Status.REPLACED:
            lines.append(f"  took the place of the same name from {other.provenance.describe()}")
    cls = step.cls
    for label, names in (
        ("requires", cls.requires),
        ("wants", cls.wants),
        ("after", cls.after),
        ("before", cls.before),
    ):
        for other_name in names:
            lines.append(f"  {label} {other_name}: {_other(plan, other_name)}")
    incoming = [e for e in plan.edges if e.target == step.name]
    outgoing = [e for e in plan.edges if e.source == step.name]
    for edge in incoming:
        lines.append(
            f"  starts after {edge.source} [{edge.kind.value}, declared by {edge.declared_by}]"
        )
    for edge in outgoing:
        lines.append(
            f"  starts before {edge.target} [{edge.kind.value}, declared by {edge.declared_by}]"
        )
    if step.enabled and incoming:
        lines.append("  wave set by the chain " + " -> ".join(_longest_chain(plan, step.name)))
    required_by = sorted(
        s.name for s in plan.steps if s.status is not Status.REPLACED and _names(plan, s, step.name)
    )
    for dependent in required_by:
        lines.append(f"  required by {dependent} ({plan.step(dependent).status.value})")
    if step.cls.hosts:
        lines.append(f"  runs the child blueprint {step.cls.hosts}")
    return ascii_safe("\n".join(lines)) + "\n"


def _status(plan: Plan, step: PlannedStep) -> str:
    if step.enabled:
        bp = plan.blueprints[step.blueprint]
        return (
            f"enabled, blueprint {step.blueprint}, wave {step.wave}, "
            f"position {(step.position or 0) + 1} of {len(bp.order)}"
        )
    return f"{step.status.value} ({step.reason}), blueprint {step.blueprint}"


def _qualname(step: PlannedStep) -> str:
    return f"{step.cls.__module__}.{step.cls.__qualname__}"


def _other(plan: Plan, name: str) -> str:
    try:
        other = plan.step(name)
    except KeyError:
        return "absent (not installed)"
    prefix = f"replaced by {other.name}, " if other.name != name else ""
    if other.enabled:
        return f"{prefix}enabled, wave {other.wave}"
    return f"{prefix}{other.status.value}: {other.reason}"


def _names(plan: Plan, step: PlannedStep, target: str) -> bool:
    return any(plan.aliases.get(n, n) == target for n in step.cls.requires)


def _longest_chain(plan: Plan, name: str) -> list[str]:
    """The chain of predecessors, one per wave, that put `name` in its wave."""
    wave = {s.name: s.wave for s in plan.steps if s.enabled}
    chain = [name]
    while True:
        current = chain[0]
        preds = [e.source for e in plan.edges if e.target == current]
        deeper = [p for p in preds if wave.get(p) == (wave.get(current) or 0) - 1]
        if not deeper:
            return chain
        chain.insert(0, sorted(deeper)[0])
