"""Boot and shutdown analysis from the run record: blame, critical chain, an SVG plot.

The record (`bootkit.record`) gives every step its blueprint, wave, offset from the
start of the phase, seconds and the steps it waited for. Offsets of a child
blueprint's steps count from the same phase start, so one time axis serves all.

Critical chain (systemd-analyze's idea): in each blueprint, start from the step that
finished last and walk back, at each step, to whichever of the steps it waited for
finished last: the chain of waits that decided when the blueprint was ready. A step
waits for its predecessors in the plan (`after` in the record) and, because a
blueprint starts by waves, for every step of the wave before its own; without that
wave barrier a chain would skip a slow step the plan does not link. A step that runs a
child blueprint is followed by that blueprint's own chain, indented. For shutdown
everything runs the other way: a step stops after the steps that needed it and after
the wave above its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from bootkit.errors import BootkitError
from bootkit.record import FILENAME
from bootkit.render import ascii_safe


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

    def usual(self, t: Timing) -> bool:
        """Whether `t` is this phase's own kind of work: a start in a boot (not a stop
        of its rollback), a stop in a shutdown."""
        return not t.outcome or t.outcome.startswith("start" if self.name == "boot" else "stop")

    def note(self, t: Timing) -> str:
        """`t`'s outcome when it is not the phase's plain one (``start_failed``, or
        ``stopped`` for a rollback during a boot); empty otherwise."""
        plain = "started" if self.name == "boot" else "stopped"
        return "" if t.outcome in ("", plain) else t.outcome

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
    """The critical chain of one blueprint, first link first."""
    steps = {t.step: t for t in phase.steps if t.blueprint == blueprint and phase.usual(t)}
    if not steps:
        return []
    waited: dict[str, list[str]] = {name: list(t.after) for name, t in steps.items()}
    barrier = -1  # a wave starts once the wave before it is done
    if phase.name == "shutdown":  # a step stops after those that needed it, waves reversed
        barrier = 1
        waited = {name: [] for name in steps}
        for name, timing in steps.items():
            for before in timing.after:
                if before in waited:
                    waited[before].append(name)
    waves: dict[int, list[Timing]] = {}
    for t in steps.values():
        if t.wave is not None:
            waves.setdefault(t.wave, []).append(t)
    last = max(steps.values(), key=lambda t: (t.end, t.step))
    chain = [last]
    while True:
        link = chain[-1]
        named = [steps[n] for n in waited[link.step] if n in steps]
        wave = [] if link.wave is None else waves.get(link.wave + barrier, [])
        preds = [t for t in (*named, *wave) if t not in chain]
        if not preds:
            break
        chain.append(max(preds, key=lambda t: (t.end, t in named, t.step)))
    return chain[::-1]


def rows(phase: Phase) -> list[tuple[int, Timing]]:
    """(depth, step) for every step, as a tree: each blueprint's steps by start, and a
    step running a child blueprint followed by the child's steps at depth + 1."""
    children = {host: child for child, host in phase.hosts.items()}
    by_blueprint: dict[str, list[Timing]] = {}
    for t in sorted(phase.steps, key=lambda t: (t.offset, t.step)):
        by_blueprint.setdefault(t.blueprint, []).append(t)
    out: list[tuple[int, Timing]] = []

    def walk(blueprint: str, depth: int) -> None:
        for t in by_blueprint.pop(blueprint, []):
            out.append((depth, t))
            if t.step in children:
                walk(children[t.step], depth + 1)

    for blueprint in phase.blueprints():
        walk(blueprint, 0)  # children come through their hosts; an orphan last, at depth 0
    return out


# -- text and JSON ---------------------------------------------------------------------


def blame_text(phase: Phase) -> str:
    """One line per step, longest first: seconds, step, blueprint, and any outcome
    other than a plain start or stop."""
    timings = blame(phase)
    width = max((len(t.step) for t in timings), default=0)
    lines = [
        f"{phase.name}: {_duration(phase.seconds)} in all, {len(timings)} steps, longest first"
    ]
    for t in timings:
        flag = f"  [{phase.note(t)}]" if phase.note(t) else ""
        lines.append(f"{_duration(t.seconds):>9}  {t.step:<{width}}  ({t.blueprint}){flag}")
    return ascii_safe("\n".join(lines)) + "\n"


def chain_text(phase: Phase) -> str:
    """The critical chain like ``systemd-analyze critical-chain``: each link with its
    start offset (@) and duration (+), a child blueprint's chain indented beneath its host."""
    verdict = "" if phase.ok else " (failed)"
    lines = [
        f"{phase.name}: {_duration(phase.seconds)}{verdict}; the chain of waits that decided it "
        "(@ start offset, + duration)"
    ]
    for depth, t in critical_chain(phase):
        lines.append(
            f"{'  ' * depth}{t.step} @{_duration(t.offset)} +{_duration(t.seconds)} ({t.blueprint})"
        )
    return ascii_safe("\n".join(lines)) + "\n"


def blame_json(phase: Phase) -> str:
    return json.dumps([_as_dict(t) for t in blame(phase)], indent=1)


def chain_json(phase: Phase) -> str:
    return json.dumps(
        [{"depth": depth, **_as_dict(t)} for depth, t in critical_chain(phase)], indent=1
    )


def _as_dict(t: Timing) -> dict[str, Any]:
    return {
        "blueprint": t.blueprint,
        "step": t.step,
        "wave": t.wave,
        "offset": t.offset,
        "seconds": t.seconds,
        "outcome": t.outcome,
    }


# -- the SVG timeline ------------------------------------------------------------------

_PALETTE = ("#4e79a7", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#edc948")
_CRITICAL = "#e15759"
_GREY = "#666666"
_HALO = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'  # text over lines
_CHART = 640  # pixels for the whole phase
_ROW = 22
_TOP = 70
_CHAR = 7.2  # about one character of 12 px sans-serif
_NICE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def plot(phase: Phase) -> str:
    """An SVG timeline: one bar (``class="bar"``) per step on a shared time axis, rows as
    a tree of blueprints, each wave of a blueprint a shaded band, the critical chain red,
    and a dashed line where the phase ended."""
    tree = rows(phase)
    critical = {t for _, t in critical_chain(phase)}
    colours = {b: _PALETTE[i % len(_PALETTE)] for i, b in enumerate(phase.blueprints())}
    span = max([phase.seconds, *(t.end for _, t in tree)]) or 1.0
    names = max((len(t.step) + 2 * depth for depth, t in tree), default=4)
    blueprints = max((len(b) for b in colours), default=9)
    cols = _Columns(
        blueprint=10 + _CHAR * max(names, 4) + 20,
        wave=10 + _CHAR * (max(names, 4) + max(blueprints, 9)) + 64,
        chart=10 + _CHAR * (max(names, 4) + max(blueprints, 9)) + 84,
        scale=_CHART / span,
    )
    bottom = _TOP + _ROW * len(tree)
    notes = max((len(phase.note(t)) for _, t in tree), default=0)
    width, height = int(cols.chart + _CHART + 90 + _CHAR * notes), bottom + 70
    count = _count(len({(t.blueprint, t.step) for _, t in tree}), "step")
    done = "ready" if phase.name == "boot" else "stopped"
    if not phase.ok:
        done = "failed"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="16" font-weight="bold">bootkit {phase.name}: '
        f"{done} in {_duration(phase.seconds)}, {count} in {_count(len(colours), 'blueprint')}"
        "</text>",
        f'<text x="10" y="40" fill="{_GREY}">one bar per step, from its start to its end; '
        "red: the critical chain; shading: the waves of each blueprint</text>",
    ]
    out += _bands(tree, width)
    heads = (
        (10, "start", "step"),
        (cols.blueprint, "start", "blueprint"),
        (cols.wave, "end", "wave"),
    )
    for x, anchor, head in heads:
        out.append(
            f'<text x="{x:.0f}" y="{_TOP - 10}" text-anchor="{anchor}" fill="{_GREY}">{head}</text>'
        )
    for tick in _ticks(span):
        x = cols.at(tick)
        out.append(
            f'<line class="tick" x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{bottom}" '
            'stroke="#d0d0d0"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{_TOP - 10}" text-anchor="middle">{_tick(tick, span)}</text>'
        )
    end = cols.at(phase.seconds)
    out.append(
        f'<line class="end" x1="{end:.1f}" y1="{_TOP - 6}" x2="{end:.1f}" y2="{bottom + 6}" '
        f'stroke="{_GREY}" stroke-dasharray="4 3"/>'
    )
    out.append(
        f'<text x="{end:.1f}" y="{bottom + 20}" text-anchor="middle" fill="{_GREY}">'
        f"{done} @{_duration(phase.seconds)}</text>"
    )
    previous = ""
    for i, (depth, t) in enumerate(tree):
        y = _TOP + i * _ROW
        if t.blueprint != previous:  # name the blueprint where its rows begin
            out.append(
                f'<text x="{cols.blueprint:.0f}" y="{y + 15}" fill="{colours[t.blueprint]}">'
                f"{_text(t.blueprint)}</text>"
            )
            previous = t.blueprint
        colour = _CRITICAL if t in critical else colours[t.blueprint]
        out += _row(i, t, depth, y, cols, colour, phase.note(t))
    out += _legend(colours, bottom + 46)
    out.append("</svg>")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class _Columns:
    """Where the plot's columns begin, and the chart's pixels per second."""

    blueprint: float
    wave: float  # right edge
    chart: float
    scale: float

    def at(self, seconds: float) -> float:
        return self.chart + seconds * self.scale


def _bands(tree: list[tuple[int, Timing]], width: int) -> list[str]:
    """A shaded band behind each run of rows of one wave of one blueprint."""
    out: list[str] = []
    start, shade = 0, False
    for i in range(1, len(tree) + 1):
        here = (tree[start][1].blueprint, tree[start][1].wave)
        if i < len(tree) and (tree[i][1].blueprint, tree[i][1].wave) == here:
            continue
        out.append(
            f'<rect class="band" x="0" y="{_TOP + start * _ROW}" width="{width}" '
            f'height="{(i - start) * _ROW}" fill="{"#eef1f5" if shade else "#ffffff"}"/>'
        )
        start, shade = i, not shade
    return out


def _row(
    i: int, t: Timing, depth: int, y: int, cols: _Columns, colour: str, note: str
) -> list[str]:
    """Row `i`: a step's name (indented by depth), its wave, its bar (red and its name
    bold on the critical chain) and duration, and `note`, an outcome worth telling."""
    on_chain = colour == _CRITICAL
    name = _text(t.step)
    weight = ' font-weight="bold"' if on_chain else ""
    x = cols.at(t.offset)
    length = max(t.seconds * cols.scale, 2.0)
    wave = "" if t.wave is None else str(t.wave)
    outcome = f" {_text(note)}" if note else ""
    tip = _text(f"{t.step} ({t.blueprint}, wave {wave})")
    return [
        f'<text x="{10 + 14 * depth}" y="{y + 15}"{weight}>{name}</text>',
        f'<text x="{cols.wave:.0f}" y="{y + 15}" text-anchor="end" fill="{_GREY}">{wave}</text>',
        f'<rect class="bar{" critical" if on_chain else ""}" id="bar{i}-{_ident(t)}" '
        f'data-step="{name}" data-blueprint="{_text(t.blueprint)}" '
        f'x="{x:.1f}" y="{y + 4}" width="{length:.1f}" height="{_ROW - 8}" rx="2" '
        f'fill="{colour}">'
        f"<title>{tip}: @{_duration(t.offset)} +{_duration(t.seconds)}{outcome}</title></rect>",
        f'<text x="{x + length + 4:.1f}" y="{y + 15}" fill="{_GREY}"{_HALO}>'
        f"{_duration(t.seconds)}{outcome}</text>",
    ]


def _legend(colours: Mapping[str, str], y: int) -> list[str]:
    out: list[str] = []
    x = 10.0
    for name, colour in [("critical chain", _CRITICAL), *colours.items()]:
        label = _text(name if colour == _CRITICAL else f"blueprint {name}")
        out.append(f'<rect x="{x:.0f}" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 17:.0f}" y="{y}">{label}</text>')
        x += 40 + _CHAR * len(label)
    return out


def _text(raw: str) -> str:
    """`raw` folded to ASCII and escaped for XML text and attribute values alike."""
    return escape(ascii_safe(raw), {'"': "&quot;"})


def _ident(t: Timing) -> str:
    """An XML id for a step's bar: letters, digits, '-', '_' and '.' only."""
    raw = f"{t.blueprint}--{t.step}"
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in raw)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    """Like systemd-analyze: milliseconds below a second (``17.5ms``), else seconds."""
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.3f}s"


def _tick(seconds: float, span: float) -> str:
    return f"{seconds * 1000:g}ms" if span < 1 else f"{seconds:g}s"


def _ticks(span: float) -> list[float]:
    """Round tick values from 0 to `span`, about eight of them."""
    raw = span / 8
    step = next((n for n in _NICE if n >= raw), raw)
    return [round(i * step, 6) for i in range(int(span / step) + 1)]
