"""The order of a plan: soft edges, on-demand steps, waves and the documented rule."""

from __future__ import annotations

import itertools

from bootkit import (
    EdgeKind,
    Settings,
    Status,
    Step,
)
from bootkit.testing import plan_of
from tests.graph_support import Db, edge_triples, without

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
