"""The public API is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import bootkit
import bootkit.testing

PUBLIC = {
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
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(bootkit.__all__) == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in bootkit.__all__:
        assert getattr(bootkit, name) is not None, name


def test_errors_share_one_base() -> None:
    for name in bootkit.__all__:
        obj = getattr(bootkit, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, bootkit.BootkitError), name


def test_testing_helpers_are_listed() -> None:
    for name in bootkit.testing.__all__:
        assert hasattr(bootkit.testing, name), name


def test_importing_bootkit_does_not_import_networkx_or_structlog() -> None:
    import subprocess
    import sys

    code = "import sys, bootkit, bootkit.cli; print(sorted(m for m in ('networkx', 'structlog') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
