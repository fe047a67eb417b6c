"""The exceptions bootkit raises; every message names the culprit and the fix."""

from __future__ import annotations


class BootkitError(Exception):
    """Base of every error bootkit raises on purpose; the CLI prints it as one line."""


class ConfigError(BootkitError):
    """A setting, option value or configuration file is wrong."""


class PluginError(BootkitError):
    """A plugin could not be loaded or registered."""


class GraphError(BootkitError):
    """The step graph is invalid; raised before any step starts."""


class UnknownStepError(GraphError):
    """A step requires, or a command names, a step that is not installed."""


class DisabledRequirementError(GraphError):
    """A step requires a step that is installed but turned off."""


class CrossBlueprintError(GraphError):
    """A step requires a step of a blueprint it may not reach."""


class DuplicateStepError(GraphError):
    """Two installed steps share one name and neither replaces the other."""


class ReplacementError(GraphError):
    """A `replaces` declaration cannot be honoured."""


class CycleError(GraphError):
    """The ordering constraints form one or more cycles."""

    def __init__(self, message: str, cycles: list[list[str]]) -> None:
        super().__init__(message)
        self.cycles = cycles


class StepTimeoutError(BootkitError):
    """A step did not finish starting or stopping within its timeout."""


class StartError(BootkitError):
    """A blueprint failed to start; every step it had started was stopped again.

    Attributes:
        blueprint: the blueprint that failed.
        step: the step whose start failed (None when the failure was elsewhere).
        rollback: outcome of stopping the steps started before, one line per step.
    """

    def __init__(
        self,
        message: str,
        *,
        blueprint: str,
        step: str | None,
        rollback: list[str],
    ) -> None:
        super().__init__(message)
        self.blueprint = blueprint
        self.step = step
        self.rollback = rollback


class StopError(BootkitError):
    """One or more steps failed or timed out while stopping; the others were stopped."""

    def __init__(self, message: str, *, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = failures


class ServiceNotFoundError(BootkitError):
    """A step asked its context for a service that no earlier step provided."""
