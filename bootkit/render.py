"""Render a plan as text, Graphviz DOT, Mermaid or JSON; labels are ASCII-safe."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from bootkit.plan import Edge, EdgeKind, Plan, PlannedStep, Status

# How each edge kind is drawn.
DOT_STYLE = {
    EdgeKind.REQUIRES: 'style=solid, penwidth=1.6, color="#1f4e79"',
    EdgeKind.WANTS: 'style=dashed, color="#2e7d32"',
    EdgeKind.AFTER: 'style=dotted, color="#555555"',
    EdgeKind.BEFORE: 'style=dotted, color="#555555", arrowhead=empty',
}
MERMAID_ARROW = {
    EdgeKind.REQUIRES: "==>",
    EdgeKind.WANTS: "-.->",
    EdgeKind.AFTER: "-->",
    EdgeKind.BEFORE: "-->",
}


def ascii_safe(text: str) -> str:
    """`text` with every non-ASCII character escaped (\\xe9, \\u2192)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def select(
    plan: Plan, blueprints: Sequence[str]
) -> tuple[list[str], list[PlannedStep], list[Edge]]:
    """The blueprints, steps and edges to show; all when `blueprints` is empty."""
    names = list(blueprints) or sorted(plan.blueprints)
    chosen = set(names)
    steps = [s for s in plan.steps if s.blueprint in chosen]
    edges = [e for e in plan.edges if plan.step(e.source).blueprint in chosen]
    return names, steps, edges


def _provenance(step: PlannedStep) -> str:
    p = step.provenance
    return f"{p.plugin} ({p.distribution} {p.version})".replace(" )", ")")


def text(plan: Plan, blueprints: Sequence[str] = ()) -> str:
    names, steps, edges = select(plan, blueprints)
    lines: list[str] = []
    width = max((len(s.name) for s in steps), default=10) + 2
    for name in names:
        bp = plan.blueprints[name]
        host = f" (runs inside {bp.host}, blueprint {bp.parent})" if bp.host else ""
        lines.append(f"blueprint {name}{host}")
        for index, wave in enumerate(bp.waves):
            lines.append(f"  wave {index}")
            for step_name in wave:
                step = plan.step(step_name)
                lines.append(f"    {step_name:<{width}}{_provenance(step)}")
        off = [s for s in steps if s.blueprint == name and not s.enabled]
        if off:
            lines.append("  not started")
            for step in off:
                lines.append(f"    {step.name:<{width}}{step.status.value}: {step.reason}")
        lines.append("")
    if edges:
        lines.append("edges, in start order")
        for edge in edges:
            lines.append(
                f"  {edge.source} -> {edge.target}  [{edge.kind.value}, by {edge.declared_by}]"
            )
    return ascii_safe("\n".join(lines).rstrip() + "\n")


def _quote(value: str) -> str:
    return '"' + ascii_safe(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: Sequence[str]) -> str:
    """One quoted DOT label, its lines joined by DOT's own line break escape."""
    return '"' + "\\n".join(_quote(line)[1:-1] for line in lines) + '"'


def dot(plan: Plan, blueprints: Sequence[str] = ()) -> str:
    names, steps, edges = select(plan, blueprints)
    out = [
        "digraph bootkit {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef4fb", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for index, name in enumerate(names):
        bp = plan.blueprints[name]
        out.append(f"  subgraph cluster_{index} {{")
        title = [f"blueprint {name}"] + ([f"(runs inside {bp.host})"] if bp.host else [])
        out.append(f"    label={_dot_label(title)};")
        out.append('    style=rounded; color="#999999";')
        for step in (s for s in steps if s.blueprint == name):
            out.append("    " + _dot_node(step))
        out.append("  }")
    for edge in edges:
        label = _quote(edge.kind.value)
        out.append(
            f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={label}, {DOT_STYLE[edge.kind]}];"
        )
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_node(step: PlannedStep) -> str:
    ident = (
        _quote(step.name)
        if step.status is not Status.REPLACED
        else _quote(f"{step.name} ({step.provenance.distribution})")
    )
    lines = [step.name, _provenance(step)]
    if step.enabled:
        lines.append(f"wave {step.wave}")
        attrs = ""
    else:
        lines.append(f"{step.status.value}: {step.reason}")
        attrs = ', style="rounded,dashed,filled", fillcolor="#f2f2f2", fontcolor="#777777"'
    return f"{ident} [label={_dot_label(lines)}{attrs}];"


def _mermaid_id(name: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _mermaid_text(value: str) -> str:
    return ascii_safe(value).replace('"', "'")


def mermaid(plan: Plan, blueprints: Sequence[str] = ()) -> str:
    names, steps, edges = select(plan, blueprints)
    out = ["flowchart LR"]
    for index, name in enumerate(names):
        out.append(f'  subgraph bp_{index}["blueprint {_mermaid_text(name)}"]')
        for step in (s for s in steps if s.blueprint == name and s.status is not Status.REPLACED):
            detail = f"wave {step.wave}" if step.enabled else f"{step.status.value}: {step.reason}"
            label = _mermaid_text(f"{step.name}<br/>{_provenance(step)}<br/>{detail}")
            out.append(f'    {_mermaid_id(step.name)}["{label}"]')
            if not step.enabled:
                out.append(f"    class {_mermaid_id(step.name)} off")
        out.append("  end")
    for edge in edges:
        arrow = MERMAID_ARROW[edge.kind]
        out.append(
            f"  {_mermaid_id(edge.source)} {arrow}|{edge.kind.value}| {_mermaid_id(edge.target)}"
        )
    out.append("  classDef off fill:#f2f2f2,stroke:#999,stroke-dasharray:4 3,color:#777")
    return "\n".join(out) + "\n"


def as_dict(plan: Plan, blueprints: Sequence[str] = ()) -> dict[str, Any]:
    names, steps, edges = select(plan, blueprints)
    return {
        "blueprints": [
            {
                "name": name,
                "host": plan.blueprints[name].host,
                "parent": plan.blueprints[name].parent,
                "waves": [list(w) for w in plan.blueprints[name].waves],
            }
            for name in names
        ],
        "steps": [
            {
                "name": s.name,
                "blueprint": s.blueprint,
                "status": s.status.value,
                "reason": s.reason,
                "wave": s.wave,
                "position": s.position,
                "replaced": list(s.replaced),
                "plugin": s.provenance.plugin,
                "distribution": s.provenance.distribution,
                "version": s.provenance.version,
            }
            for s in steps
        ],
        "edges": [
            {
                "source": e.source,
                "target": e.target,
                "kind": e.kind.value,
                "declared_by": e.declared_by,
                "distribution": e.provenance.distribution,
                "declared": list(e.declared) if e.declared else None,
            }
            for e in edges
        ],
    }


def as_json(plan: Plan, blueprints: Sequence[str] = ()) -> str:
    return json.dumps(as_dict(plan, blueprints), indent=2, ensure_ascii=True) + "\n"
