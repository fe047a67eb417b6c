"""The plan: the validated, ordered result of resolving installed steps.

Plain data, so renderers and explainers never import networkx; `bootkit.graph`
builds it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from bootkit.step import Step


@dataclass(frozen=True, order=True)
class Provenance:
    """Where a step came from: the plugin (entry point) and its distribution."""

    plugin: str
    distribution: str
    version: str

    def describe(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class InstalledStep:
    """A step class as contributed by a plugin."""

    cls: type[Step]
    provenance: Provenance

    @property
    def name(self) -> str:
        return self.cls.name

    def describe(self) -> str:
        return f"{self.cls.name} (blueprint {self.cls.blueprint}, {self.provenance.describe()})"


class Status(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # turned off by --without or its condition
    REPLACED = "replaced"  # another step took its place
    UNUSED = "unused"  # on-demand and nothing requires or wants it


class EdgeKind(enum.Enum):
    REQUIRES = "requires"
    WANTS = "wants"
    AFTER = "after"
    BEFORE = "before"


class Edge(NamedTuple):
    """`source` starts before `target`, because `declared_by` said so."""

    source: str
    target: str
    kind: EdgeKind
    declared_by: str
    provenance: Provenance
    # When an edge crosses into a child blueprint it is lifted to the child's host
    # step; `declared` keeps the two step names as written.
    declared: tuple[str, str] | None = None

    def describe(self) -> str:
        via = f" (lifted from {self.declared[0]} -> {self.declared[1]})" if self.declared else ""
        return (
            f"{self.source} -> {self.target} [{self.kind.value}, declared by "
            f"{self.declared_by} in {self.provenance.describe()}{via}]"
        )


class PlannedStep(NamedTuple):
    """One installed step and what the plan decided about it."""

    installed: InstalledStep
    status: Status
    reason: str = ""  # why it is not enabled; empty when enabled
    wave: int | None = None  # position within the blueprint's waves, when enabled
    position: int | None = None  # index in the blueprint's start order, when enabled
    replaced: tuple[str, ...] = ()  # names of steps this one replaced

    @property
    def name(self) -> str:
        return self.installed.cls.name

    @property
    def blueprint(self) -> str:
        return self.installed.cls.blueprint

    @property
    def cls(self) -> type[Step]:
        return self.installed.cls

    @property
    def provenance(self) -> Provenance:
        return self.installed.provenance

    @property
    def enabled(self) -> bool:
        return self.status is Status.ENABLED


@dataclass(frozen=True)
class BlueprintPlan:
    """The start order of one blueprint, as waves of steps that may start together."""

    name: str
    waves: tuple[tuple[str, ...], ...]
    host: str | None = None  # step that runs this blueprint, for child blueprints
    parent: str | None = None  # blueprint of the host step

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(name for wave in self.waves for name in wave)


@dataclass(frozen=True)
class Plan:
    """Every installed step with its status, the ordered blueprints and the edges."""

    steps: tuple[PlannedStep, ...]
    blueprints: Mapping[str, BlueprintPlan]
    edges: tuple[Edge, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)  # replaced name -> replacer

    def step(self, name: str) -> PlannedStep:
        """The step that answers to `name` (following replacements).

        Raises:
            KeyError: no installed step has that name.
        """
        name = self.aliases.get(name, name)
        for planned in self.steps:
            if planned.name == name and planned.status is not Status.REPLACED:
                return planned
        raise KeyError(name)

    def enabled(self, blueprint: str) -> tuple[PlannedStep, ...]:
        """The enabled steps of `blueprint`, in start order."""
        index = {p.name: p for p in self.steps if p.enabled}
        return tuple(index[name] for name in self.blueprints[blueprint].order)

    @property
    def top_level(self) -> tuple[str, ...]:
        """Blueprints that no step hosts, by name."""
        return tuple(sorted(n for n, b in self.blueprints.items() if b.host is None))
