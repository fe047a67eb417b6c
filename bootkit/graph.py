"""Resolve installed steps into a validated, deterministic plan (the only networkx user).

Order rule: within a blueprint, steps start in waves. Wave 0 holds the steps with no
predecessor; wave k the steps whose longest chain of predecessors has k links.
Within a wave steps sort by name (code point order). The start order is the waves
concatenated; stop order is its reverse. Nothing depends on hash order or on the
order plugins were discovered in.
"""

from __future__ import annotations

import difflib
import gc
import re
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain

import networkx as nx

from bootkit.config import Settings
from bootkit.errors import (
    CrossBlueprintError,
    CycleError,
    DisabledRequirementError,
    DuplicateStepError,
    GraphError,
    ReplacementError,
    UnknownStepError,
)
from bootkit.plan import (
    BlueprintPlan,
    Edge,
    EdgeKind,
    InstalledStep,
    Plan,
    PlannedStep,
    Status,
)

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)+$")
_DECLARATIONS = ("requires", "after", "before", "wants", "replaces")  # as read below
_ENABLED = (Status.ENABLED, "")
_STR = {str}
_KIND_ORDER = {kind: rank for rank, kind in enumerate(sorted(EdgeKind, key=lambda k: k.value))}


def resolve(installed: Sequence[InstalledStep], settings: Settings) -> Plan:
    """Validate `installed` against `settings` and order it.

    Raises:
        GraphError: a subclass naming the culprit; nothing has started.
    """
    # Resolving allocates many small objects and no reference cycles; pausing the
    # cyclic collector meanwhile saves a fifth of the time on large plans.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _Resolver(installed, settings).plan()
    finally:
        if paused:
            gc.enable()


class _Resolver:
    def __init__(self, installed: Sequence[InstalledStep], settings: Settings) -> None:
        names = [_check_declaration(item) for item in installed]
        self.settings = settings
        self.winners: dict[str, InstalledStep] = {}  # by name, in name order
        self.unique = len(set(names)) == len(names)
        if self.unique:  # the usual case: the name alone orders them
            order = sorted(range(len(names)), key=names.__getitem__)
            self.installed = [installed[i] for i in order]
        else:
            self.installed = sorted(installed, key=_installed_key)
        self.status: dict[str, tuple[Status, str]] = {}
        self.replaced: list[tuple[InstalledStep, str]] = []
        self.replaced_names: dict[str, list[str]] = defaultdict(list)
        self.aliases: dict[str, str] = {}
        self.hosts: dict[str, str] = {}  # child blueprint -> host step
        self._ancestors: dict[str, list[str]] = {}

    def plan(self) -> Plan:
        self._pick_winners()
        self._apply_replacements()
        self._find_hosts()
        self._apply_conditions()
        self._include_on_demand()
        graph, edges = self._build_graph()
        try:
            generations = list(nx.topological_generations(graph))
        except nx.NetworkXUnfeasible:
            _report_cycles(graph, edges)
            raise
        return self._ordered_plan(generations, edges)

    # -- names and replacement -------------------------------------------------

    def canonical(self, name: str) -> str:
        if name not in self.aliases:
            return name
        seen = [name]
        while name in self.aliases:
            name = self.aliases[name]
            if name in seen:
                raise ReplacementError("replacement loop: " + " -> ".join([*seen, name]))
            seen.append(name)
        return name

    def _pick_winners(self) -> None:
        if self.unique:
            self.winners = {item.cls.name: item for item in self.installed}
            return
        by_name: dict[str, list[InstalledStep]] = defaultdict(list)
        for item in self.installed:
            by_name[item.name].append(item)
        for name, items in by_name.items():
            if len(items) == 1:
                self.winners[name] = items[0]
                continue
            replacers = [i for i in items if name in i.cls.replaces]
            if len(replacers) != 1:
                listed = "; ".join(i.provenance.describe() for i in items)
                raise DuplicateStepError(
                    f"step name {name!r} is declared {len(items)} times: {listed}; rename one, "
                    f"or let exactly one declare replaces = ({name!r},)"
                )
            self.winners[name] = replacers[0]
            for item in items:
                if item is not replacers[0]:
                    self.replaced.append((item, name))
            self.replaced_names[name].append(name)

    def _apply_replacements(self) -> None:
        replaced_by: dict[str, str] = {}
        for name, item in [(n, i) for n, i in self.winners.items() if i.cls.replaces]:
            for target in item.cls.replaces:
                if target == name or target not in self.winners:
                    continue
                if target in replaced_by:
                    raise ReplacementError(
                        f"step {target!r} is replaced twice: by {replaced_by[target]!r} "
                        f"and by {name!r} ({item.provenance.describe()}); keep one replacement"
                    )
                victim = self.winners[target]
                if victim.cls.blueprint != item.cls.blueprint:
                    raise ReplacementError(
                        f"step {name!r} (blueprint {item.cls.blueprint}) cannot replace "
                        f"{target!r} of blueprint {victim.cls.blueprint}; a replacement must "
                        "belong to the same blueprint"
                    )
                replaced_by[target] = name
        for target, name in replaced_by.items():
            self.aliases[target] = name
            self.replaced.append((self.winners.pop(target), name))
        for target in replaced_by:
            self.replaced_names[self.canonical(target)].append(target)

    # -- enabled, disabled, hosted ---------------------------------------------

    def _find_hosts(self) -> None:
        for name, item in self.winners.items():
            child = item.cls.hosts
            if child is None:
                continue
            if child in self.hosts:
                raise GraphError(
                    f"blueprint {child!r} is hosted by two steps, {self.hosts[child]!r} and "
                    f"{name!r}; a child blueprint runs inside exactly one step"
                )
            self.hosts[child] = name
        for child in self.hosts:
            self.ancestors(child)  # raises on a nesting loop

    def ancestors(self, blueprint: str) -> list[str]:
        """`blueprint` and the blueprints enclosing it, innermost first."""
        cached = self._ancestors.get(blueprint)
        if cached is not None:
            return cached
        chain = [blueprint]
        while chain[-1] in self.hosts:
            parent = self.winners[self.hosts[chain[-1]]].cls.blueprint
            if parent in chain:
                raise GraphError(
                    "blueprints host each other in a loop: " + " -> ".join([*chain, parent])
                )
            chain.append(parent)
        self._ancestors[blueprint] = chain
        return chain

    def _apply_conditions(self) -> None:
        settings, status = self.settings, self.status
        for name, item in self.winners.items():
            if settings.without:
                disable = settings.disabled_by(name) or next(
                    filter(None, map(settings.disabled_by, self.replaced_names.get(name, ()))),
                    None,
                )
                if disable is not None:
                    status[name] = (Status.DISABLED, f"disabled by {disable.describe()}")
                    continue
            try:
                condition = item.cls.condition(settings)
            except Exception as exc:
                raise GraphError(
                    f"step {item.describe()}: its condition raised "
                    f"{type(exc).__name__}: {exc}; fix the step or its configuration"
                ) from exc
            if condition.enabled:
                status[name] = _ENABLED
            else:
                status[name] = (Status.DISABLED, f"its condition: {condition.reason}")
        if not self.hosts:
            return
        # A child blueprint's steps are off when the step hosting it is off.
        for name, item in self.winners.items():
            for bp in self.ancestors(item.cls.blueprint)[:-1]:
                host = self.hosts[bp]
                host_status, host_reason = self.status[host]
                if host_status is not Status.ENABLED and self.status[name][0] is Status.ENABLED:
                    self.status[name] = (
                        Status.DISABLED,
                        f"its blueprint {bp!r} runs inside step {host!r}, which is "
                        f"{host_status.value}: {host_reason}",
                    )
                    break

    def _include_on_demand(self) -> None:
        if not any(item.cls.on_demand for item in self.winners.values()):
            return
        wanted: set[str] = set()
        pending = [n for n, (s, _) in self.status.items() if s is Status.ENABLED]
        pending = [n for n in pending if not self.winners[n].cls.on_demand]
        while pending:
            name = pending.pop()
            if name in wanted:
                continue
            wanted.add(name)
            cls = self.winners[name].cls
            for dep in (*cls.requires, *cls.wants):
                dep = self.canonical(dep)
                # Only enabled steps pass the demand on; a disabled requirer needs nothing.
                if dep in self.winners and self.status[dep][0] is Status.ENABLED:
                    pending.append(dep)
            if cls.blueprint in self.hosts:
                pending.append(self.hosts[cls.blueprint])
        for name, item in self.winners.items():
            if item.cls.on_demand and name not in wanted and self.status[name][0] is Status.ENABLED:
                self.status[name] = (
                    Status.UNUSED,
                    "on demand, and no enabled step requires or wants it",
                )

    # -- the graph ---------------------------------------------------------------

    def _build_graph(self) -> tuple[nx.DiGraph, dict[tuple[str, str], list[Edge]]]:
        """The graph of enabled steps; refuses unknown, disabled or unreachable requirements."""
        winners, aliases, canonical = self.winners, self.aliases, self.canonical
        # `status` follows `winners`, in name order.
        enabled = [n for n, state in self.status.items() if state[0] is Status.ENABLED]
        blueprint_of = {n: winners[n].cls.blueprint for n in enabled}
        requires, before = EdgeKind.REQUIRES, EdgeKind.BEFORE
        edges: dict[tuple[str, str], list[Edge]] = {}
        for name in enabled:
            item = winners[name]
            cls, provenance, own = item.cls, item.provenance, blueprint_of[name]
            for kind, others in (
                (requires, cls.requires),
                (EdgeKind.WANTS, cls.wants),
                (EdgeKind.AFTER, cls.after),
                (before, cls.before),
            ):
                for written in others:
                    other = canonical(written) if aliases else written
                    other_blueprint = blueprint_of.get(other)
                    if other_blueprint is None:
                        if kind is requires:
                            self._refuse_requirement(item, written, other)
                        continue  # absent or off: ordering-only and soft edges fall away
                    key = (name, other) if kind is before else (other, name)
                    if other_blueprint == own:
                        edge = Edge(key[0], key[1], kind, name, provenance)
                    else:
                        if kind is requires:
                            self._check_reachable(item, other, other_blueprint)
                        lifted = self._lift(key[0], key[1], item, kind)
                        if lifted is None:
                            continue
                        edge = Edge(lifted[0], lifted[1], kind, name, provenance, key)
                        key = lifted
                    group = edges.get(key)
                    if group is None:
                        edges[key] = [edge]
                    else:
                        group.append(edge)
        graph = nx.DiGraph()
        graph.add_nodes_from(enabled)
        graph.add_edges_from(edges)
        return graph, edges

    def _refuse_requirement(self, item: InstalledStep, written: str, target: str) -> None:
        """Raise the error for a requirement on a step that is absent or not enabled."""
        found = self.status.get(target)
        if found is None:
            close = difflib.get_close_matches(target, list(self.winners), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownStepError(
                f"step {item.describe()} requires {written!r}, which no installed "
                f"plugin provides{hint}; install the plugin that provides it or drop "
                "the requirement"
            )
        raise DisabledRequirementError(
            f"step {item.describe()} requires {target!r}, which is "
            f"{found[0].value}: {found[1]}; enable {target!r} or also turn off {item.name!r}"
        )

    def _check_reachable(self, item: InstalledStep, target: str, target_blueprint: str) -> None:
        if target_blueprint not in self.ancestors(item.cls.blueprint):
            raise CrossBlueprintError(
                f"step {item.describe()} requires {target!r} of blueprint "
                f"{target_blueprint!r}; a step may only require steps of its own blueprint "
                "or of the blueprints enclosing it (declared by the step hosting its "
                "blueprint)"
            )

    def _lift(
        self, source: str, target: str, item: InstalledStep, kind: EdgeKind
    ) -> tuple[str, str] | None:
        """Map an edge between blueprints onto host steps of their common blueprint."""
        source_chain = self.ancestors(self.winners[source].cls.blueprint)
        target_chain = self.ancestors(self.winners[target].cls.blueprint)
        common = next((bp for bp in source_chain if bp in target_chain), None)
        if common is None:
            raise CrossBlueprintError(
                f"step {item.describe()} declares {kind.value} between {source!r} "
                f"(blueprint {source_chain[0]!r}) and {target!r} (blueprint "
                f"{target_chain[0]!r}), which share no enclosing blueprint; drop the edge"
            )
        lifted = (
            self._host_in(source, source_chain, common),
            self._host_in(target, target_chain, common),
        )
        return None if lifted[0] == lifted[1] else lifted

    def _host_in(self, step: str, chain: list[str], blueprint: str) -> str:
        index = chain.index(blueprint)
        return step if index == 0 else self.hosts[chain[index - 1]]

    def _ordered_plan(
        self, generations: list[list[str]], edges: dict[tuple[str, str], list[Edge]]
    ) -> Plan:
        winners = self.winners
        # Every edge joins two steps of one blueprint (edges between blueprints were
        # lifted), so a blueprint's generations are its waves, without gaps.
        by_blueprint: dict[str, list[list[str]]] = {}
        for index, generation in enumerate(generations):
            for node in generation:
                waves = by_blueprint.setdefault(winners[node].cls.blueprint, [])
                while len(waves) <= index:
                    waves.append([])
                waves[index].append(node)
        blueprints: dict[str, BlueprintPlan] = {}
        names = {i.cls.blueprint for i in winners.values()} | set(self.hosts)
        for bp in sorted(names):
            host = self.hosts.get(bp)
            blueprints[bp] = BlueprintPlan(
                name=bp,
                waves=tuple(tuple(sorted(w)) for w in by_blueprint.get(bp, ())),
                host=host,
                parent=winners[host].cls.blueprint if host else None,
            )
        # Steps by blueprint; in each, the enabled ones in start order, then the others
        # by name.
        status, replaced_names = self.status, self.replaced_names
        others: list[tuple[tuple[str, str, str], PlannedStep]] = []
        for name, item in winners.items():
            state, reason = status[name]
            if state is not Status.ENABLED:
                replaced = tuple(replaced_names.get(name, ()))
                planned = PlannedStep(item, state, reason, replaced=replaced)
                others.append(((item.cls.blueprint, name, state.value), planned))
        for item, by in self.replaced:
            planned = PlannedStep(item, Status.REPLACED, f"replaced by {by!r}")
            others.append(((item.cls.blueprint, item.cls.name, "replaced"), planned))
        others.sort(key=_first)
        steps: list[PlannedStep] = []
        rank: dict[str, int] = {}  # start rank across blueprints, blueprints by name
        enabled, later = Status.ENABLED, 0
        # A step replaced by a duplicate of its name may be all there is of its blueprint.
        for bp in sorted({*blueprints, *(key[0] for key, _ in others)}):
            position = 0
            bp_waves = blueprints[bp].waves if bp in blueprints else ()
            for number, members in enumerate(bp_waves):
                for name in members:
                    former = replaced_names.get(name)
                    steps.append(
                        PlannedStep(
                            winners[name],
                            enabled,
                            "",
                            number,
                            position,
                            tuple(former) if former else (),
                        )
                    )
                    rank[name] = len(rank)
                    position += 1
            while later < len(others) and others[later][0][0] == bp:
                steps.append(others[later][1])
                later += 1
        plan_edges = _ordered_edges(edges, rank)
        return Plan(tuple(steps), blueprints, plan_edges, dict(self.aliases))


def _ordered_edges(
    edges: dict[tuple[str, str], list[Edge]], rank: dict[str, int]
) -> tuple[Edge, ...]:
    """Edges by the start rank of their source, then of their target, then kind and
    declaring step (only steps joined by more than one edge need that last sort)."""
    width = len(rank)
    # One distinct integer per pair of steps: plain integers sort fastest.
    by_key = {rank[s] * width + rank[t]: group for (s, t), group in edges.items()}
    ordered = [by_key[key] for key in sorted(by_key)]
    for group in ordered:
        if len(group) > 1:
            group.sort(key=_edge_tiebreak)
    return tuple(chain.from_iterable(ordered))


def _edge_tiebreak(edge: Edge) -> tuple[int, str]:
    return (_KIND_ORDER[edge.kind], edge.declared_by)


def _first(pair: tuple[tuple[str, str, str], PlannedStep]) -> tuple[str, str, str]:
    return pair[0]


def _check_declaration(item: InstalledStep) -> str:
    """The step's name, once its declarations are of the right types."""
    cls = item.cls
    name = getattr(cls, "name", None)
    if type(name) is not str or not NAME_PATTERN.match(name):
        raise GraphError(
            f"{_where(item)} has name {name!r}; give it a namespaced name such as 'myplugin.cache'"
        )
    blueprint = getattr(cls, "blueprint", None)
    if type(blueprint) is not str or not blueprint:
        raise GraphError(
            f"{_where(item)} ({name}) has no blueprint; set blueprint = 'worker' or similar"
        )
    declared = (cls.requires, cls.after, cls.before, cls.wants, cls.replaces)
    requires, after, before, wants, replaces = declared
    # Only tuples: a set would make edges, and so cycle reports, follow hash order.
    if (
        type(requires) is type(after) is type(before) is type(wants) is type(replaces) is tuple
        and {*map(type, requires + after + before + wants + replaces)} <= _STR
    ):
        return name
    for attr, value in zip(_DECLARATIONS, declared, strict=True):
        if type(value) is not tuple or not all(type(v) is str for v in value):
            raise GraphError(
                f"{_where(item)} ({name}): {attr} must be a tuple of step names, got "
                f"{value!r}; write {attr} = ('other.step',)"
            )
    return name


def _installed_key(item: InstalledStep) -> tuple[str, str, str]:
    return (item.cls.name, item.provenance.distribution, item.provenance.plugin)


def _where(item: InstalledStep) -> str:
    cls = item.cls
    return f"step class {cls.__module__}.{cls.__qualname__} from {item.provenance.describe()}"


def _report_cycles(graph: nx.DiGraph, edges: dict[tuple[str, str], list[Edge]]) -> None:
    """Raise a `CycleError` naming one cycle of every strongly connected component."""
    components = [
        sorted(c)
        for c in nx.strongly_connected_components(graph)
        if len(c) > 1 or graph.has_edge(next(iter(c)), next(iter(c)))
    ]
    components.sort()
    cycles: list[list[str]] = []
    parts: list[str] = []
    for component in components:
        cycle = nx.find_cycle(graph.subgraph(component), source=component[0])
        nodes = [u for u, _ in cycle]
        cycles.append(nodes)
        described = "; ".join(e.describe() for u, v in cycle for e in edges[(u, v)])
        parts.append(f"cycle {' -> '.join([*nodes, nodes[0]])}: {described}")
    raise CycleError(
        f"{len(cycles)} ordering cycle(s), remove or reverse one edge of each: "
        + " | ".join(parts),
        cycles,
    )
