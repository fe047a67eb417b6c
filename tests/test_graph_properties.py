"""Properties of plan resolution over random graphs: order, waves, determinism, cycles."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from bootkit import CycleError, Plan, Step
from bootkit.testing import make_settings, plan_of

SETTINGS = make_settings(Path("unused-state-dir"))
KINDS = ("requires", "after", "before", "wants")

# (i, j, kind): step i must start before step j, declared as `kind`.
Declared = tuple[int, int, str]


def make_step(
    step_name: str,
    requires_: tuple[str, ...] = (),
    after_: tuple[str, ...] = (),
    before_: tuple[str, ...] = (),
    wants_: tuple[str, ...] = (),
) -> type[Step]:
    class Generated(Step):
        name = step_name
        blueprint = "prop"
        requires = requires_
        after = after_
        before = before_
        wants = wants_

    return Generated


def build_steps(names: list[str], declared: list[Declared]) -> list[type[Step]]:
    """One step per name; an edge i -> j is declared on j, except `before` on i."""
    decl: dict[tuple[int, str], list[str]] = defaultdict(list)
    for i, j, kind in declared:
        if kind == "before":
            decl[(i, kind)].append(names[j])
        else:
            decl[(j, kind)].append(names[i])
    return [
        make_step(
            name,
            requires_=tuple(decl[(index, "requires")]),
            after_=tuple(decl[(index, "after")]),
            before_=tuple(decl[(index, "before")]),
            wants_=tuple(decl[(index, "wants")]),
        )
        for index, name in enumerate(names)
    ]


@st.composite
def names_of(draw: st.DrawFn, count: int) -> list[str]:
    # Unpadded numbers, so code-point order ("n.s10" < "n.s2") differs from index order.
    return [f"n.s{k}" for k in draw(st.permutations(range(count)))]


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], list[Declared]]:
    count = draw(st.integers(min_value=1, max_value=25))
    names = draw(names_of(count))
    pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
    declared = [(i, j, draw(st.sampled_from(KINDS))) for i, j in chosen]
    return names, declared


@st.composite
def cyclic_graphs(draw: st.DrawFn) -> tuple[list[str], list[Declared]]:
    count = draw(st.integers(min_value=1, max_value=12))
    names = draw(names_of(count))
    node = st.integers(min_value=0, max_value=count - 1)
    declared = draw(st.lists(st.tuples(node, node, st.sampled_from(KINDS)), max_size=30))
    # Guarantee at least one cycle (a self-loop when the ring has one node).
    ring = draw(st.lists(node, min_size=1, max_size=count, unique=True))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(ring), max_size=len(ring)))
    for position, kind in enumerate(kinds):
        declared.append((ring[position], ring[(position + 1) % len(ring)], kind))
    return names, draw(st.permutations(declared))


def start_position(plan: Plan) -> dict[str, int]:
    return {name: index for index, name in enumerate(plan.blueprints["prop"].order)}


@settings(max_examples=150, deadline=None)
@given(dags())
def test_order_respects_every_edge_and_waves_are_longest_paths(
    graph: tuple[list[str], list[Declared]],
) -> None:
    names, declared = graph
    plan = plan_of(*build_steps(names, declared), settings=SETTINGS)
    position = start_position(plan)
    assert sorted(position) == sorted(names)
    predecessors: dict[str, set[str]] = defaultdict(set)
    for i, j, _ in declared:
        assert position[names[i]] < position[names[j]]
        predecessors[names[j]].add(names[i])
    wave: dict[str, int] = {}
    for planned in plan.steps:
        assert planned.wave is not None
        wave[planned.name] = planned.wave
    for name in names:
        assert wave[name] == 1 + max((wave[p] for p in predecessors[name]), default=-1)
    for members in plan.blueprints["prop"].waves:
        assert list(members) == sorted(members)
    assert {(e.source, e.target, e.kind.value) for e in plan.edges} == {
        (names[i], names[j], kind) for i, j, kind in declared
    }


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_order_is_the_same_for_any_permutation_of_the_input(
    graph: tuple[list[str], list[Declared]], data: st.DataObject
) -> None:
    names, declared = graph
    steps = build_steps(names, declared)
    reference = plan_of(*steps, settings=SETTINGS)
    shuffled = data.draw(st.permutations(steps))
    plan = plan_of(*shuffled, settings=SETTINGS)
    assert plan.blueprints["prop"].waves == reference.blueprints["prop"].waves
    assert plan.edges == reference.edges
    assert [p.name for p in plan.steps] == [p.name for p in reference.steps]


@settings(max_examples=150, deadline=None)
@given(cyclic_graphs())
def test_every_cyclic_component_is_reported_by_one_real_cycle(
    graph: tuple[list[str], list[Declared]],
) -> None:
    names, declared = graph
    expected = nx.DiGraph()
    expected.add_nodes_from(names)
    expected.add_edges_from((names[i], names[j]) for i, j, _ in declared)
    cyclic = [
        frozenset(c)
        for c in nx.strongly_connected_components(expected)
        if len(c) > 1 or expected.has_edge(next(iter(c)), next(iter(c)))
    ]
    assert cyclic  # the strategy always plants a cycle

    try:
        plan_of(*build_steps(names, declared), settings=SETTINGS)
    except CycleError as exc:
        reported = exc.cycles
        message = str(exc)
    else:
        raise AssertionError("a graph with a cycle resolved without CycleError")

    owners = []
    for cycle in reported:
        assert cycle
        assert len(set(cycle)) == len(cycle)
        closed = [*cycle, cycle[0]]
        for source, target in itertools.pairwise(closed):
            assert expected.has_edge(source, target)
            assert f"{source} -> {target} [" in message
        (owner,) = [c for c in cyclic if set(cycle) <= c]
        owners.append(owner)
    assert sorted(owners, key=sorted) == sorted(cyclic, key=sorted)
