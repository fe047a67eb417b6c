"""What the graph tests share: provenances, settings with steps turned off, a plan's
edges as plain triples, and two steps several tests build on."""

from __future__ import annotations

import dataclasses

from bootkit import BlueprintStep, EdgeKind, Plan, Settings, Step
from bootkit.config import Disable
from bootkit.plan import Provenance

ALPHA = Provenance("alpha", "alpha-dist", "1.0")
BETA = Provenance("beta", "beta-dist", "2.0")


def without(settings: Settings, *names: str, source: str = "command line") -> Settings:
    return dataclasses.replace(settings, without=tuple(Disable(n, source) for n in names))


def edge_triples(plan: Plan) -> set[tuple[str, str, EdgeKind]]:
    return {(e.source, e.target, e.kind) for e in plan.edges}


class Db(Step):
    name = "store.db"
    blueprint = "worker"


class Host(BlueprintStep):
    name = "parent.host"
    blueprint = "parent"
    hosts = "child"
