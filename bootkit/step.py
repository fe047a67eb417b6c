"""Steps: the unit the kernel orders, starts, supervises and stops."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from bootkit.config import Settings
    from bootkit.context import Context
    from bootkit.events import ChildRestart


class StopReason(enum.Enum):
    """Why `Step.stop` is being called."""

    SHUTDOWN = "shutdown"  # orderly stop of a running blueprint
    ROLLBACK = "rollback"  # a later step failed to start; undo this one
    RESTART = "restart"  # the enclosing child blueprint is being restarted


@dataclass(frozen=True)
class Condition:
    """The answer of `Step.condition`: whether the step runs, and why not."""

    enabled: bool
    reason: str = ""

    @classmethod
    def on(cls) -> Condition:
        return _ON

    @classmethod
    def off(cls, reason: str) -> Condition:
        """A disabled condition; `reason` says which setting turned the step off."""
        return cls(False, reason)


_ON = Condition(True)


class Step:
    """Base class of every step; subclass it and set the class attributes.

    `name` must be stable and namespaced (``plugin.thing``); dependencies refer to
    names, never to import paths.

    Attributes:
        name: unique, namespaced step name, e.g. ``amqp.connection``.
        blueprint: name of the blueprint the step belongs to.
        requires: hard dependencies: must be installed and enabled; they start first.
        after: ordering only: start after these steps when they are present.
        before: ordering only: start before these steps when they are present.
        wants: soft dependencies: start after them when present, no error if absent;
            they also pull in `on_demand` steps.
        replaces: names of steps this one takes the place of.
        on_demand: when true, the step runs only if an enabled step requires or wants it.
        hosts: name of the child blueprint this step runs (set by `BlueprintStep`).
        start_timeout: seconds `start` may take before it counts as failed (None: no limit).
        stop_timeout: seconds `stop` may take before the kernel moves on (None: no limit).
    """

    name: ClassVar[str]
    blueprint: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    after: ClassVar[tuple[str, ...]] = ()
    before: ClassVar[tuple[str, ...]] = ()
    wants: ClassVar[tuple[str, ...]] = ()
    replaces: ClassVar[tuple[str, ...]] = ()
    on_demand: ClassVar[bool] = False
    hosts: ClassVar[str | None] = None
    start_timeout: ClassVar[float | None] = 30.0
    stop_timeout: ClassVar[float | None] = 10.0

    @classmethod
    def condition(cls, settings: Settings) -> Condition:
        """Decide from configuration, before anything starts, whether the step runs."""
        return Condition.on()

    def start(self, ctx: Context) -> None:
        """Start the step; return only once it is ready to be depended upon."""

    def stop(self, ctx: Context, reason: StopReason) -> None:
        """Stop the step and release what `start` acquired."""

    def on_child_restarting(self, ctx: Context, event: ChildRestart) -> None:
        """Called on every running step of a blueprint before one of its children restarts."""

    def on_child_restarted(self, ctx: Context, event: ChildRestart) -> None:
        """Called on every running step of a blueprint after one of its children restarted."""
