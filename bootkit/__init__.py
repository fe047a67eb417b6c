"""bootkit: a pluggable bootstep/lifecycle microkernel."""

from bootkit.blueprint import Blueprint, Fault
from bootkit.config import Option, Settings
from bootkit.context import Context
from bootkit.errors import (
    BootkitError,
    ConfigError,
    CrossBlueprintError,
    CycleError,
    DisabledRequirementError,
    DuplicateStepError,
    GraphError,
    PluginError,
    ReplacementError,
    ServiceNotFoundError,
    StartError,
    StepTimeoutError,
    StopError,
    UnknownStepError,
)
from bootkit.events import (
    BlueprintEvent,
    ChildRestart,
    Observer,
    State,
    StepEvent,
    Transition,
)
from bootkit.hookspecs import hookimpl
from bootkit.kernel import Kernel
from bootkit.log import logger
from bootkit.plan import Edge, EdgeKind, Plan, PlannedStep, Provenance, Status
from bootkit.record import write_atomically
from bootkit.step import Condition, Step, StopReason
from bootkit.supervise import BlueprintStep, RestartBudgetError

__all__ = [
    "Blueprint",
    "BlueprintEvent",
    "BlueprintStep",
    "BootkitError",
    "ChildRestart",
    "Condition",
    "ConfigError",
    "Context",
    "CrossBlueprintError",
    "CycleError",
    "DisabledRequirementError",
    "DuplicateStepError",
    "Edge",
    "EdgeKind",
    "Fault",
    "GraphError",
    "Kernel",
    "Observer",
    "Option",
    "Plan",
    "PlannedStep",
    "PluginError",
    "Provenance",
    "ReplacementError",
    "RestartBudgetError",
    "ServiceNotFoundError",
    "Settings",
    "StartError",
    "State",
    "Status",
    "Step",
    "StepEvent",
    "StepTimeoutError",
    "StopError",
    "StopReason",
    "Transition",
    "UnknownStepError",
    "hookimpl",
    "logger",
    "write_atomically",
]
