"""The context a step receives: settings, shared services, and a way to report faults."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from bootkit.errors import ServiceNotFoundError

if TYPE_CHECKING:
    from bootkit.config import Settings
    from bootkit.events import ChildRestart, Observer
    from bootkit.plan import Plan

T = TypeVar("T")


class Context:
    """Per-blueprint context; services are looked up here, then in enclosing blueprints.

    Steps share objects by type: ``ctx.provide(Connection, conn)`` in one step,
    ``ctx.get(Connection)`` in a later one.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        plan: Plan,
        blueprint: str,
        observer: Observer,
        parent: Context | None,
        on_fault: Callable[[str | None, BaseException], None],
        on_child_restart: Callable[[ChildRestart, bool], None],
        hook: Any = None,
    ) -> None:
        self.settings = settings
        #: The plugins' hooks: ``ctx.hook.bootkit_<name>(**kwargs)`` calls every
        #: plugin's implementation, including hooks plugins add with
        #: `bootkit_add_hookspecs`; empty when the kernel runs without plugins.
        self.hook: Any = hook if hook is not None else pluggy.HookRelay()
        self.plan = plan
        self.blueprint = blueprint
        self.observer = observer
        self.parent = parent
        self._on_fault = on_fault
        self._on_child_restart = on_child_restart
        self._services: dict[type[Any], Any] = {}
        self._lock = threading.Lock()

    def provide(self, kind: type[T], value: T) -> None:
        """Make `value` available to later steps of this blueprint and its children."""
        with self._lock:
            self._services[kind] = value

    def withdraw(self, kind: type[Any]) -> None:
        """Remove a service, typically from the `stop` of the step that provided it."""
        with self._lock:
            self._services.pop(kind, None)

    def find(self, kind: type[T]) -> T | None:
        """The service of type `kind`, or None."""
        ctx: Context | None = self
        while ctx is not None:
            with ctx._lock:
                if kind in ctx._services:
                    value: T = ctx._services[kind]
                    return value
            ctx = ctx.parent
        return None

    def get(self, kind: type[T]) -> T:
        """The service of type `kind`.

        Raises:
            ServiceNotFoundError: no step of this or an enclosing blueprint provided it.
        """
        value = self.find(kind)
        if value is None:
            raise ServiceNotFoundError(
                f"blueprint {self.blueprint!r}: no step provided {kind.__qualname__}; "
                "the step that provides it must start first (add it to `requires`)"
            )
        return value

    def fail(self, error: BaseException, *, step: str | None = None) -> None:
        """Report that a running step broke; its blueprint's supervisor decides what next."""
        self._on_fault(step, error)

    def child_restart(self, event: ChildRestart, *, done: bool) -> None:
        """Tell the running steps of this blueprint that a child is (or was) restarted."""
        self._on_child_restart(event, done)
