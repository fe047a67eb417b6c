"""Plans that cannot be made: ordering cycles and step declarations of the wrong kind."""

from __future__ import annotations

import pytest

from bootkit import (
    Condition,
    CycleError,
    GraphError,
    Settings,
    Step,
)
from bootkit.graph import resolve
from bootkit.plan import InstalledStep
from bootkit.testing import plan_of
from tests.graph_support import ALPHA, BETA, Host

# -- cycles -----------------------------------------------------------------------------


def test_cycle_is_reported_whole_with_every_edge_kind_and_distribution(
    settings: Settings,
) -> None:
    class A(Step):
        name = "cy.a"
        blueprint = "worker"
        requires = ("cy.c",)

    class B(Step):
        name = "cy.b"
        blueprint = "worker"
        after = ("cy.a",)

    class C(Step):
        name = "cy.c"
        blueprint = "worker"

    class D(Step):
        name = "cy.d"
        blueprint = "worker"
        before = ("cy.c",)
        after = ("cy.b",)

    installed = [
        InstalledStep(A, ALPHA),
        InstalledStep(B, BETA),
        InstalledStep(C, ALPHA),
        InstalledStep(D, BETA),
    ]
    with pytest.raises(CycleError) as info:
        resolve(installed, settings)
    assert info.value.cycles == [["cy.a", "cy.b", "cy.d", "cy.c"]]
    message = str(info.value)
    assert "1 ordering cycle(s), remove or reverse one edge of each" in message
    assert "cycle cy.a -> cy.b -> cy.d -> cy.c -> cy.a" in message
    assert "cy.a -> cy.b [after, declared by cy.b in plugin 'beta' (beta-dist 2.0)]" in message
    assert "cy.b -> cy.d [after, declared by cy.d in plugin 'beta' (beta-dist 2.0)]" in message
    assert "cy.d -> cy.c [before, declared by cy.d in plugin 'beta' (beta-dist 2.0)]" in message
    assert "cy.c -> cy.a [requires, declared by cy.a in plugin 'alpha' (alpha-dist 1.0)]" in message


def test_self_loop_is_a_cycle(settings: Settings) -> None:
    class Self(Step):
        name = "x.self"
        blueprint = "worker"
        after = ("x.self",)

    with pytest.raises(CycleError) as info:
        plan_of(Self, settings=settings)
    assert info.value.cycles == [["x.self"]]
    assert "cycle x.self -> x.self" in str(info.value)
    assert "[after, declared by x.self" in str(info.value)


def test_two_disjoint_cycles_are_both_reported(settings: Settings) -> None:
    class A(Step):
        name = "one.a"
        blueprint = "worker"
        after = ("one.b",)

    class B(Step):
        name = "one.b"
        blueprint = "worker"
        after = ("one.a",)

    class C(Step):
        name = "two.c"
        blueprint = "worker"
        wants = ("two.d",)

    class D(Step):
        name = "two.d"
        blueprint = "worker"
        requires = ("two.c",)

    class Fine(Step):
        name = "zz.fine"
        blueprint = "worker"
        after = ("one.a",)

    with pytest.raises(CycleError) as info:
        plan_of(Fine, D, C, B, A, settings=settings)
    assert info.value.cycles == [["one.a", "one.b"], ["two.c", "two.d"]]
    message = str(info.value)
    assert message.startswith("2 ordering cycle(s)")
    assert "[wants, declared by two.c" in message
    assert "[requires, declared by two.d" in message
    assert "zz.fine" not in message


def test_cycle_through_lifted_edges_names_the_declared_steps(settings: Settings) -> None:
    class ParentLate(Step):
        name = "parent.late"
        blueprint = "parent"
        after = ("parent.host",)

    class ChildNeedsLate(Step):
        name = "child.needs"
        blueprint = "child"
        requires = ("parent.late",)

    with pytest.raises(CycleError) as info:
        plan_of(Host, ParentLate, ChildNeedsLate, settings=settings)
    assert info.value.cycles == [["parent.host", "parent.late"]]
    assert "lifted from parent.late -> child.needs" in str(info.value)


# -- bad declarations ---------------------------------------------------------------------


def test_requires_given_as_a_string_is_refused_with_the_fix(settings: Settings) -> None:
    class Bad(Step):
        name = "bad.string"
        blueprint = "worker"
        requires = "a.b"  # type: ignore[assignment]

    with pytest.raises(GraphError) as info:
        plan_of(Bad, settings=settings)
    message = str(info.value)
    assert "Bad" in message
    assert "(bad.string)" in message
    assert "test-distribution" in message
    assert "requires must be a tuple of step names, got 'a.b'" in message
    assert "write requires = ('other.step',)" in message


def test_declaration_given_as_a_set_is_refused(settings: Settings) -> None:
    class Unordered(Step):
        name = "bad.set"
        blueprint = "worker"
        after = {"a.b", "c.d"}  # type: ignore[assignment]

    with pytest.raises(GraphError, match=r"after must be a tuple of step names"):
        plan_of(Unordered, settings=settings)


def test_step_without_a_name_is_refused_with_the_fix(settings: Settings) -> None:
    class Nameless(Step):
        blueprint = "worker"

    with pytest.raises(GraphError) as info:
        plan_of(Nameless, settings=settings)
    message = str(info.value)
    assert "Nameless" in message
    assert "test-distribution" in message
    assert "has name None" in message
    assert "give it a namespaced name such as 'myplugin.cache'" in message


def test_step_with_a_name_outside_any_namespace_is_refused(settings: Settings) -> None:
    class Flat(Step):
        name = "cache"
        blueprint = "worker"

    with pytest.raises(GraphError) as info:
        plan_of(Flat, settings=settings)
    assert "has name 'cache'" in str(info.value)
    assert "namespaced name" in str(info.value)


def test_step_without_a_blueprint_is_refused_with_the_fix(settings: Settings) -> None:
    class Homeless(Step):
        name = "lost.step"

    with pytest.raises(GraphError) as info:
        plan_of(Homeless, settings=settings)
    message = str(info.value)
    assert "Homeless" in message
    assert "(lost.step) has no blueprint" in message
    assert "set blueprint = 'worker'" in message


def test_condition_that_raises_is_a_graph_error_naming_the_step(settings: Settings) -> None:
    class Fragile(Step):
        name = "frag.ile"
        blueprint = "worker"

        @classmethod
        def condition(cls, settings: Settings) -> Condition:
            raise KeyError("broker_url")

    with pytest.raises(GraphError) as info:
        resolve([InstalledStep(Fragile, BETA)], settings)
    message = str(info.value)
    assert "frag.ile (blueprint worker, plugin 'beta' (beta-dist 2.0))" in message
    assert "its condition raised KeyError: 'broker_url'" in message
    assert "fix the step or its configuration" in message
    assert isinstance(info.value.__cause__, KeyError)
