"""Boot and shutdown analysis from the run record: blame, critical chain, an SVG plot.

The record (`bootkit.record`) gives every step its blueprint, wave, offset from the
start of the phase, seconds and the steps it waited for. Offsets of a child
blueprint's steps count from the same phase start, so one time axis serves all.

Critical chain: in each blueprint, start from the step that finished last and walk
back, at each step, to the predecessor that finished last: the chain of waits that
decided when the blueprint was ready. A step that runs a child blueprint is followed
by that blueprint's own chain, indented. For shutdown the edges run the other way (a
step stops after the steps that needed it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from bootkit.errors import BootkitError
from bootkit.record import FILENAME
from bootkit.render import ascii_safe

PHASES = ("boot", "shutdown")


@dataclass(frozen=True)
class Timing:
    """One step's part in a phase."""

    blueprint: str
    step: str
    wave: int | None
    offset: float
    seconds: float
    outcome: str
    after: tuple[str, ...]

    @property
    def end(self) -> float:
        return self.offset + self.seconds


@dataclass(frozen=True)
class Phase:
    """A boot or a shutdown, as the run record kept it."""

    name: str
    seconds: float
    ok: bool
    steps: tuple[Timing, ...]
    hosts: Mapping[str, str]  # child blueprint -> the step that runs it

    def blueprints(self) -> list[str]:
        """Blueprints no step runs (in record order), then the rest."""
        seen = list(dict.fromkeys(t.blueprint for t in self.steps))
        return [b for b in seen if b not in self.hosts] + [b for b in seen if b in self.hosts]


def load(state_dir: Path, phase: str = "boot") -> Phase:
    """The phase of the last run kept in `state_dir`.

    Raises:
        BootkitError: no record, an unreadable one, or a run that never got that far.
    """
    path = state_dir / FILENAME
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BootkitError(
            f"no run record at {path}; run `bootkit start` with this --state-dir first"
        ) from None
    except (OSError, ValueError) as exc:
        raise BootkitError(f"cannot read the run record {path}: {exc}") from None
    return from_record(data, phase, str(path))


def from_record(data: Any, phase: str, source: str) -> Phase:
    """The phase `phase` of a run record (the parsed ``timings.json``) from `source`.

    Raises:
        BootkitError: the record lacks that phase or is malformed.
    """
    record = data.get(phase) if isinstance(data, dict) else None
    if not isinstance(record, dict):
        raise BootkitError(f"the run record of {source} has no {phase}: it never got there")
    try:
        hosts = {
            name: info["host"]
            for name, info in (data.get("blueprints") or {}).items()
            if isinstance(info, dict) and info.get("host")
        }
        steps = tuple(
            Timing(
                blueprint=str(s["blueprint"]),
                step=str(s["step"]),
                wave=s.get("wave"),
                offset=float(s["offset"]),
                seconds=float(s["seconds"]),
                outcome=str(s.get("outcome", "")),
                after=tuple(s.get("after") or ()),
            )
            for s in record.get("steps", ())
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BootkitError(f"the run record of {source} is malformed: {exc!r}") from None
    return Phase(phase, float(record.get("seconds", 0.0)), bool(record.get("ok")), steps, hosts)


def blame(phase: Phase) -> list[Timing]:
    """Steps by time taken, longest first (ties by name)."""
    return sorted(phase.steps, key=lambda t: (-t.seconds, t.step))


def critical_chain(phase: Phase) -> list[tuple[int, Timing]]:
    """(depth, step) from the first link to the last, per top-level blueprint; a step
    running a child blueprint is followed by the child's chain at depth + 1."""
    children = {host: child for child, host in phase.hosts.items()}
    links: list[tuple[int, Timing]] = []

    def expand(blueprint: str, depth: int) -> None:
        for timing in _chain(phase, blueprint):
            links.append((depth, timing))
            if timing.step in children:
                expand(children[timing.step], depth + 1)

    for blueprint in phase.blueprints():
        if blueprint not in phase.hosts:
            expand(blueprint, 0)
    return links


def _chain(phase: Phase, blueprint: str) -> list[Timing]:
    steps = {t.step: t for t in phase.steps if t.blueprint == blueprint}
    if not steps:
        return []
    waited: dict[str, list[str]] = {name: list(t.after) for name, t in steps.items()}
    if phase.name == "shutdown":  # a step stops after those that needed it
        waited = {name: [] for name in steps}
        for name, timing in steps.items():
            for before in timing.after:
                if before in waited:
                    waited[before].append(name)
    last = max(steps.values(), key=lambda t: (t.end, t.step))
    chain = [last]
    while True:
        preds = [steps[n] for n in waited[chain[-1].step] if n in steps and steps[n] not in chain]
        if not preds:
            break
        chain.append(max(preds, key=lambda t: (t.end, t.step)))
    return chain[::-1]


# -- text ------------------------------------------------------------------------------


def blame_text(phase: Phase) -> str:
    rows = blame(phase)
    width = max((len(t.step) for t in rows), default=0)
    lines = [f"{phase.name}: {phase.seconds:.3f}s in all, {len(rows)} steps, longest first"]
    lines += [f"{t.seconds:9.3f}s  {t.step:<{width}}  ({t.blueprint})" for t in rows]
    return "\n".join(lines) + "\n"


def chain_text(phase: Phase) -> str:
    links = critical_chain(phase)
    lines = [
        f"{phase.name}: {phase.seconds:.3f}s; the chain of waits that decided it "
        "(@ start offset, + duration)"
    ]
    for depth, t in links:
        lines.append(f"{'  ' * depth}{t.step} @{t.offset:.3f}s +{t.seconds:.3f}s ({t.blueprint})")
    return "\n".join(lines) + "\n"


def as_json(timings: Iterator[tuple[int, Timing]] | list[tuple[int, Timing]]) -> str:
    return json.dumps(
        [
            {
                "depth": depth,
                "blueprint": t.blueprint,
                "step": t.step,
                "wave": t.wave,
                "offset": t.offset,
                "seconds": t.seconds,
                "outcome": t.outcome,
            }
            for depth, t in timings
        ],
        indent=1,
    )


# -- the SVG timeline ------------------------------------------------------------------

_PALETTE = ("#4e79a7", "#59a14f", "#9c755f", "#76b7b2", "#b07aa1", "#edc948")
_CRITICAL = "#e15759"
_LABEL_WIDTH = 300
_CHART_WIDTH = 640
_ROW = 20
_TOP = 56
_NICE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def plot(phase: Phase) -> str:
    """An SVG timeline: one bar per step on a shared time axis, rows banded by wave,
    the critical chain in red."""
    rows = sorted(phase.steps, key=lambda t: (t.offset, t.blueprint, t.step))
    critical = {(t.blueprint, t.step) for _, t in critical_chain(phase)}
    colours = {b: _PALETTE[i % len(_PALETTE)] for i, b in enumerate(phase.blueprints())}
    span = max([phase.seconds, *(t.end for t in rows)]) or 1.0
    scale = _CHART_WIDTH / span
    height = _TOP + _ROW * len(rows) + 60
    width = _LABEL_WIDTH + _CHART_WIDTH + 110
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">bootkit {escape(phase.name)}: '
        f"{phase.seconds:.3f} s, {len(rows)} steps</text>",
    ]
    for i, t in enumerate(rows):  # bands first, so ticks and bars draw over them
        shade = "#f4f4f4" if (t.wave or 0) % 2 else "#ffffff"
        out.append(
            f'<rect class="band" x="0" y="{_TOP + i * _ROW}" width="{width}" height="{_ROW}" '
            f'fill="{shade}"/>'
        )
    for tick in _ticks(span):
        x = _LABEL_WIDTH + tick * scale
        out.append(
            f'<line class="tick" x1="{x:.1f}" y1="{_TOP - 8}" x2="{x:.1f}" '
            f'y2="{_TOP + _ROW * len(rows)}" stroke="#dddddd"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{_TOP - 12}" text-anchor="middle">{tick:g}s</text>')
    for i, t in enumerate(rows):
        y = _TOP + i * _ROW
        label = escape(ascii_safe(f"{t.step}  ({t.blueprint}, wave {t.wave})"))
        out.append(f'<text x="10" y="{y + 14}">{label}</text>')
        x = _LABEL_WIDTH + t.offset * scale
        colour = _CRITICAL if (t.blueprint, t.step) in critical else colours[t.blueprint]
        out.append(
            f'<rect class="bar" data-step="{escape(ascii_safe(t.step))}" x="{x:.1f}" '
            f'y="{y + 3}" width="{max(t.seconds * scale, 1.5):.1f}" height="{_ROW - 6}" '
            f'fill="{colour}"><title>{label}: @{t.offset:.3f}s +{t.seconds:.3f}s</title></rect>'
        )
        out.append(
            f'<text x="{x + max(t.seconds * scale, 1.5) + 4:.1f}" y="{y + 14}" fill="#555555">'
            f"{t.seconds * 1000:.1f} ms</text>"
        )
    y = _TOP + _ROW * len(rows) + 24
    legend = [("critical chain", _CRITICAL), *((f"blueprint {b}", c) for b, c in colours.items())]
    x = 10
    for name, colour in legend:
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="{y}">{escape(ascii_safe(name))}</text>')
        x += 30 + 7 * len(name)
    out.append(
        f'<text x="10" y="{y + 22}" fill="#555555">rows: steps by start; shading alternates '
        "by wave; bars: start offset and duration</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _ticks(span: float) -> list[float]:
    """About eight round tick values from 0 to `span`."""
    raw = span / 8
    step = next((n for n in _NICE if n >= raw), raw)
    count = int(span / step) + 1
    return [round(i * step, 6) for i in range(count + 1)]
