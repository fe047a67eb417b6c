"""Tasks every app has, so a bare worker can be tried and probed: ``bootkit.ping``,
``bootkit.echo``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bootkit_amqp_consumer.app import App


def register(app: App) -> None:
    """Add the built-in tasks to `app`."""

    @app.task(name="bootkit.ping")
    def ping() -> str:
        """Answer "pong": proves a worker consumes and results come back."""
        return "pong"

    @app.task(name="bootkit.echo")
    def echo(value: Any) -> Any:
        """Return `value` unchanged."""
        return value
