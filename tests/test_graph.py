"""Resolving installed steps into a plan: validation errors, replacement, ordering."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from bootkit import (
    BlueprintStep,
    Condition,
    CrossBlueprintError,
    CycleError,
    DisabledRequirementError,
    DuplicateStepError,
    EdgeKind,
    GraphError,
    Plan,
    ReplacementError,
    Settings,
    Status,
    Step,
    UnknownStepError,
)
from bootkit.config import Disable
from bootkit.graph import resolve
from bootkit.plan import InstalledStep, Provenance
from bootkit.testing import plan_of

ALPHA = Provenance("alpha", "alpha-dist", "1.0")
BETA = Provenance("beta", "beta-dist", "2.0")


def without(settings: Settings, *names: str, source: str = "command line") -> Settings:
    return dataclasses.replace(settings, without=tuple(Disable(n, source) for n in names))


def edge_triples(plan: Plan) -> set[tuple[str, str, EdgeKind]]:
    return {(e.source, e.target, e.kind) for e in plan.edges}


# -- unknown and disabled requirements -------------------------------------------


def test_unknown_requirement_names_asker_blueprint_distribution_and_close_match(
    settings: Settings,
) -> None:
    class Cache(Step):
        name = "store.cache"
        blueprint = "worker"

    class Api(Step):
        name = "web.api"
        blueprint = "worker"
        requires = ("store.cahce",)

    with pytest.raises(UnknownStepError) as info:
        resolve([InstalledStep(Cache, ALPHA), InstalledStep(Api, BETA)], settings)
    message = str(info.value)
    assert "web.api" in message
    assert "blueprint worker" in message
    assert "beta-dist" in message
    assert "'store.cahce'" in message
    assert "did you mean 'store.cache'?" in message
    assert "install the plugin that provides it or drop the requirement" in message


def test_unknown_requirement_without_close_match_gives_no_hint(settings: Settings) -> None:
    class Api(Step):
        name = "web.api"
        blueprint = "worker"
        requires = ("zzz.qqq",)

    with pytest.raises(UnknownStepError) as info:
        plan_of(Api, settings=settings)
    assert "'zzz.qqq'" in str(info.value)
    assert "did you mean" not in str(info.value)


class Db(Step):
    name = "store.db"
    blueprint = "worker"


class NeedsDb(Step):
    name = "web.app"
    blueprint = "worker"
    requires = ("store.db",)


def test_requirement_on_step_turned_off_by_without_names_the_without_source(
    settings: Settings,
) -> None:
    off = without(settings, "store", source="environment variable BOOTKIT_WITHOUT")
    with pytest.raises(DisabledRequirementError) as info:
        plan_of(Db, NeedsDb, settings=off)
    message = str(info.value)
    assert "web.app" in message
    assert "'store.db'" in message
    assert "--without store (environment variable BOOTKIT_WITHOUT)" in message
    assert "enable 'store.db' or also turn off 'web.app'" in message


def test_requirement_on_step_turned_off_by_its_condition_names_the_reason(
    settings: Settings,
) -> None:
    class OptionalDb(Step):
        name = "store.db"
        blueprint = "worker"

        @classmethod
        def condition(cls, settings: Settings) -> Condition:
            return Condition.off("store_url is not set")

    with pytest.raises(DisabledRequirementError) as info:
        plan_of(OptionalDb, NeedsDb, settings=settings)
    message = str(info.value)
    assert "web.app" in message
    assert "its condition: store_url is not set" in message
    assert "enable 'store.db'" in message


def test_disabled_step_with_requirement_on_disabled_step_is_fine(settings: Settings) -> None:
    plan = plan_of(Db, NeedsDb, settings=without(settings, "store", "web"))
    assert plan.step("web.app").status is Status.DISABLED
    assert plan.step("store.db").status is Status.DISABLED


# -- blueprints -------------------------------------------------------------------


class Host(BlueprintStep):
    name = "parent.host"
    blueprint = "parent"
    hosts = "child"


class ParentDb(Step):
    name = "parent.db"
    blueprint = "parent"


class ChildUsesParentDb(Step):
    name = "child.reader"
    blueprint = "child"
    requires = ("parent.db",)


def test_requirement_across_sibling_blueprints_is_refused(settings: Settings) -> None:
    class Other(Step):
        name = "other.reader"
        blueprint = "other"
        requires = ("parent.db",)

    with pytest.raises(CrossBlueprintError) as info:
        resolve([InstalledStep(ParentDb, ALPHA), InstalledStep(Other, BETA)], settings)
    message = str(info.value)
    assert "other.reader (blueprint other" in message
    assert "beta-dist" in message
    assert "'parent.db' of blueprint 'parent'" in message
    assert "may only require steps of its own blueprint or of the blueprints enclosing" in message


def test_requirement_from_parent_into_child_blueprint_is_refused(settings: Settings) -> None:
    class ChildDb(Step):
        name = "child.db"
        blueprint = "child"

    class ParentReader(Step):
        name = "parent.reader"
        blueprint = "parent"
        requires = ("child.db",)

    with pytest.raises(CrossBlueprintError) as info:
        plan_of(Host, ChildDb, ParentReader, settings=settings)
    assert "parent.reader" in str(info.value)
    assert "'child.db' of blueprint 'child'" in str(info.value)


def test_requirement_into_enclosing_blueprint_is_lifted_to_the_host_step(
    settings: Settings,
) -> None:
    plan = plan_of(Host, ParentDb, ChildUsesParentDb, settings=settings)
    assert plan.blueprints["parent"].waves == (("parent.db",), ("parent.host",))
    assert plan.blueprints["child"].waves == (("child.reader",),)
    assert plan.blueprints["child"].host == "parent.host"
    assert plan.blueprints["child"].parent == "parent"
    (edge,) = plan.edges
    assert (edge.source, edge.target, edge.kind) == ("parent.db", "parent.host", EdgeKind.REQUIRES)
    assert edge.declared == ("parent.db", "child.reader")
    assert edge.declared_by == "child.reader"
    assert "lifted from parent.db -> child.reader" in edge.describe()


def test_requirement_from_grandchild_is_lifted_to_the_outermost_host(settings: Settings) -> None:
    class ChildHost(BlueprintStep):
        name = "child.host"
        blueprint = "child"
        hosts = "grandchild"

    class Deep(Step):
        name = "grandchild.reader"
        blueprint = "grandchild"
        requires = ("parent.db",)

    plan = plan_of(Host, ChildHost, ParentDb, Deep, settings=settings)
    (edge,) = plan.edges
    assert (edge.source, edge.target) == ("parent.db", "parent.host")
    assert edge.declared == ("parent.db", "grandchild.reader")


def test_disabled_host_step_disables_its_child_blueprint_steps_with_reason(
    settings: Settings,
) -> None:
    class ChildDb(Step):
        name = "child.db"
        blueprint = "child"

    plan = plan_of(Host, ChildDb, settings=without(settings, "parent.host"))
    child = plan.step("child.db")
    assert child.status is Status.DISABLED
    assert "'child' runs inside step 'parent.host'" in child.reason
    assert "--without parent.host (command line)" in child.reason
    assert plan.blueprints["child"].waves == ()


def test_disabled_host_step_disables_grandchild_steps_too(settings: Settings) -> None:
    class ChildHost(BlueprintStep):
        name = "child.host"
        blueprint = "child"
        hosts = "grandchild"

    class Deep(Step):
        name = "grandchild.thing"
        blueprint = "grandchild"

    plan = plan_of(Host, ChildHost, Deep, settings=without(settings, "parent.host"))
    assert plan.step("child.host").status is Status.DISABLED
    assert plan.step("grandchild.thing").status is Status.DISABLED
    assert "parent.host" in plan.step("grandchild.thing").reason


# -- duplicates and replacement ------------------------------------------------------


def test_two_steps_with_one_name_from_two_distributions_are_refused_naming_both(
    settings: Settings,
) -> None:
    class First(Step):
        name = "net.conn"
        blueprint = "worker"

    class Second(Step):
        name = "net.conn"
        blueprint = "worker"

    with pytest.raises(DuplicateStepError) as info:
        resolve([InstalledStep(First, ALPHA), InstalledStep(Second, BETA)], settings)
    message = str(info.value)
    assert "'net.conn'" in message
    assert "plugin 'alpha' (alpha-dist 1.0)" in message
    assert "plugin 'beta' (beta-dist 2.0)" in message
    assert "rename one, or let exactly one declare replaces = ('net.conn',)" in message


def test_same_name_with_one_declaring_replaces_keeps_it_and_marks_the_other_replaced(
    settings: Settings,
) -> None:
    class Original(Step):
        name = "net.conn"
        blueprint = "worker"

    class Better(Step):
        name = "net.conn"
        blueprint = "worker"
        replaces = ("net.conn",)

    plan = resolve([InstalledStep(Original, ALPHA), InstalledStep(Better, BETA)], settings)
    assert plan.step("net.conn").cls is Better
    assert plan.step("net.conn").status is Status.ENABLED
    (replaced,) = [p for p in plan.steps if p.cls is Original]
    assert replaced.status is Status.REPLACED
    assert replaced.reason == "replaced by 'net.conn'"
    assert plan.blueprints["worker"].order == ("net.conn",)


def test_same_name_with_both_declaring_replaces_is_refused(settings: Settings) -> None:
    class One(Step):
        name = "net.conn"
        blueprint = "worker"
        replaces = ("net.conn",)

    class Two(Step):
        name = "net.conn"
        blueprint = "worker"
        replaces = ("net.conn",)

    with pytest.raises(DuplicateStepError, match="declared 2 times"):
        resolve([InstalledStep(One, ALPHA), InstalledStep(Two, BETA)], settings)


class Pool(Step):
    name = "pool.prefork"
    blueprint = "worker"


class ThreadPool(Step):
    name = "pool.threads"
    blueprint = "worker"
    replaces = ("pool.prefork",)


class UsesPool(Step):
    name = "tasks.consumer"
    blueprint = "worker"
    requires = ("pool.prefork",)


def test_replaced_name_resolves_to_the_replacer(settings: Settings) -> None:
    plan = plan_of(Pool, ThreadPool, settings=settings)
    assert plan.aliases == {"pool.prefork": "pool.threads"}
    assert plan.step("pool.prefork").cls is ThreadPool
    assert plan.step("pool.threads").replaced == ("pool.prefork",)
    (old,) = [p for p in plan.steps if p.cls is Pool]
    assert old.status is Status.REPLACED
    assert old.reason == "replaced by 'pool.threads'"


def test_requirers_of_a_replaced_name_get_the_replacer(settings: Settings) -> None:
    plan = plan_of(UsesPool, Pool, ThreadPool, settings=settings)
    assert plan.blueprints["worker"].order == ("pool.threads", "tasks.consumer")
    assert edge_triples(plan) == {("pool.threads", "tasks.consumer", EdgeKind.REQUIRES)}


def test_replacing_an_absent_step_is_fine(settings: Settings) -> None:
    plan = plan_of(ThreadPool, settings=settings)
    assert plan.step("pool.threads").status is Status.ENABLED
    assert plan.aliases == {}


def test_two_replacers_of_one_step_are_refused(settings: Settings) -> None:
    class GeventPool(Step):
        name = "pool.gevent"
        blueprint = "worker"
        replaces = ("pool.prefork",)

    with pytest.raises(ReplacementError) as info:
        plan_of(Pool, ThreadPool, GeventPool, settings=settings)
    message = str(info.value)
    assert "'pool.prefork' is replaced twice" in message
    assert "'pool.gevent'" in message
    assert "'pool.threads'" in message
    assert "keep one replacement" in message


def test_replacement_across_blueprints_is_refused(settings: Settings) -> None:
    class ElsewherePool(Step):
        name = "pool.elsewhere"
        blueprint = "other"
        replaces = ("pool.prefork",)

    with pytest.raises(ReplacementError, match="must belong to the same blueprint"):
        plan_of(Pool, ElsewherePool, settings=settings)


def test_without_a_replaced_name_disables_the_replacer(settings: Settings) -> None:
    plan = plan_of(Pool, ThreadPool, settings=without(settings, "pool.prefork"))
    replacer = plan.step("pool.threads")
    assert replacer.status is Status.DISABLED
    assert "--without pool.prefork (command line)" in replacer.reason
    assert plan.blueprints["worker"].order == ()


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


# -- soft edges and on-demand steps ---------------------------------------------------------


def test_wants_after_and_before_on_absent_steps_are_ignored(settings: Settings) -> None:
    class Loose(Step):
        name = "soft.loose"
        blueprint = "worker"
        wants = ("absent.one",)
        after = ("absent.two",)
        before = ("absent.three",)

    plan = plan_of(Loose, settings=settings)
    assert plan.blueprints["worker"].order == ("soft.loose",)
    assert plan.edges == ()


def test_after_a_disabled_step_is_ignored(settings: Settings) -> None:
    class Late(Step):
        name = "soft.late"
        blueprint = "worker"
        after = ("store.db",)

    plan = plan_of(Db, Late, settings=without(settings, "store.db"))
    assert plan.blueprints["worker"].order == ("soft.late",)
    assert plan.edges == ()


def test_wants_a_present_step_starts_after_it(settings: Settings) -> None:
    class Early(Step):
        name = "zz.early"
        blueprint = "worker"

    class Wanting(Step):
        name = "aa.wanting"
        blueprint = "worker"
        wants = ("zz.early",)

    plan = plan_of(Wanting, Early, settings=settings)
    assert plan.blueprints["worker"].order == ("zz.early", "aa.wanting")
    assert edge_triples(plan) == {("zz.early", "aa.wanting", EdgeKind.WANTS)}


class Lazy(Step):
    name = "lazy.thing"
    blueprint = "worker"
    on_demand = True


def test_on_demand_step_is_unused_when_nothing_needs_it(settings: Settings) -> None:
    plan = plan_of(Lazy, Db, settings=settings)
    lazy = plan.step("lazy.thing")
    assert lazy.status is Status.UNUSED
    assert lazy.reason == "on demand, and no enabled step requires or wants it"
    assert plan.blueprints["worker"].order == ("store.db",)


def test_on_demand_step_is_enabled_when_required(settings: Settings) -> None:
    class Requirer(Step):
        name = "use.lazy"
        blueprint = "worker"
        requires = ("lazy.thing",)

    plan = plan_of(Lazy, Requirer, settings=settings)
    assert plan.step("lazy.thing").status is Status.ENABLED
    assert plan.blueprints["worker"].order == ("lazy.thing", "use.lazy")


def test_on_demand_step_is_enabled_when_wanted(settings: Settings) -> None:
    class Wanter(Step):
        name = "use.lazy"
        blueprint = "worker"
        wants = ("lazy.thing",)

    plan = plan_of(Lazy, Wanter, settings=settings)
    assert plan.step("lazy.thing").status is Status.ENABLED


def test_on_demand_step_stays_unused_when_only_a_disabled_step_needs_it(
    settings: Settings,
) -> None:
    class Middle(Step):
        name = "mid.step"
        blueprint = "worker"
        requires = ("lazy.thing",)

    class Top(Step):
        name = "top.step"
        blueprint = "worker"
        wants = ("mid.step",)

    plan = plan_of(Lazy, Middle, Top, settings=without(settings, "mid.step"))
    assert plan.step("mid.step").status is Status.DISABLED
    assert plan.step("lazy.thing").status is Status.UNUSED
    assert plan.blueprints["worker"].order == ("top.step",)


def test_on_demand_step_needed_only_by_an_unused_step_is_unused(settings: Settings) -> None:
    class LazyUser(Step):
        name = "lazy.user"
        blueprint = "worker"
        on_demand = True
        requires = ("lazy.thing",)

    plan = plan_of(Lazy, LazyUser, settings=settings)
    assert plan.step("lazy.thing").status is Status.UNUSED
    assert plan.step("lazy.user").status is Status.UNUSED


# -- order ------------------------------------------------------------------------------------


class W1(Step):
    name = "w.b"
    blueprint = "worker"


class W2(Step):
    name = "w.a"
    blueprint = "worker"


class W3(Step):
    name = "w.d"
    blueprint = "worker"
    requires = ("w.b",)


class W4(Step):
    name = "w.c"
    blueprint = "worker"
    after = ("w.a", "w.b")


class W5(Step):
    name = "w.e"
    blueprint = "worker"
    requires = ("w.d",)
    before = ("w.f",)


class W6(Step):
    name = "w.f"
    blueprint = "worker"


def test_waves_are_topological_generations_with_ties_by_name(settings: Settings) -> None:
    plan = plan_of(W6, W5, W4, W3, W2, W1, settings=settings)
    assert plan.blueprints["worker"].waves == (
        ("w.a", "w.b"),
        ("w.c", "w.d"),
        ("w.e",),
        ("w.f",),
    )
    assert [(p.name, p.wave, p.position) for p in plan.enabled("worker")] == [
        ("w.a", 0, 0),
        ("w.b", 0, 1),
        ("w.c", 1, 2),
        ("w.d", 1, 3),
        ("w.e", 2, 4),
        ("w.f", 3, 5),
    ]


def test_start_order_and_edges_are_the_same_for_any_input_order(settings: Settings) -> None:
    steps = (W1, W2, W3, W4, W5, W6)
    reference = plan_of(*steps, settings=settings)
    for permutation in itertools.permutations(steps):
        plan = plan_of(*permutation, settings=settings)
        assert plan.blueprints == reference.blueprints
        assert plan.edges == reference.edges
        assert [p.name for p in plan.steps] == [p.name for p in reference.steps]


def test_blueprints_are_ordered_independently(settings: Settings) -> None:
    class Other(Step):
        name = "aaa.other"
        blueprint = "other"

    plan = plan_of(W3, W1, Other, settings=settings)
    assert plan.blueprints["other"].waves == (("aaa.other",),)
    assert plan.blueprints["worker"].waves == (("w.b",), ("w.d",))
    assert plan.top_level == ("other", "worker")
