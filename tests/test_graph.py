"""Resolving installed steps into a plan: requirements, blueprints, duplicates and
replacement (cycles and bad declarations: test_graph_errors; order: test_graph_order)."""

from __future__ import annotations

import pytest

from bootkit import (
    BlueprintStep,
    Condition,
    CrossBlueprintError,
    DisabledRequirementError,
    DuplicateStepError,
    EdgeKind,
    ReplacementError,
    Settings,
    Status,
    Step,
    UnknownStepError,
)
from bootkit.graph import resolve
from bootkit.plan import InstalledStep
from bootkit.testing import plan_of
from tests.graph_support import ALPHA, BETA, Db, Host, edge_triples, without

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


def test_a_step_replaced_from_another_blueprint_stays_in_the_plan(settings: Settings) -> None:
    # The replaced step is all there is of its blueprint; every step is listed still,
    # by blueprint, then start order, then name.
    class Original(Step):
        name = "net.conn"
        blueprint = "aaa"

    class Better(Step):
        name = "net.conn"
        blueprint = "zzz"
        replaces = ("net.conn",)

    class Other(Step):
        name = "web.app"
        blueprint = "zzz"

    class Off(Step):
        name = "zz.off"
        blueprint = "zzz"

        @classmethod
        def condition(cls, settings: Settings) -> Condition:
            return Condition.off("not wanted")

    installed = [InstalledStep(c, ALPHA) for c in (Original, Other, Off)]
    plan = resolve([*installed, InstalledStep(Better, BETA)], settings)
    listed = [(p.cls, p.status) for p in plan.steps]
    assert listed == [
        (Original, Status.REPLACED),
        (Better, Status.ENABLED),
        (Other, Status.ENABLED),
        (Off, Status.DISABLED),
    ]


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
