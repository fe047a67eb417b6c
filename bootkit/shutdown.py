"""How `bootkit start` answers SIGTERM and SIGINT: a warm shutdown, then a cold one.

The first signal asks the kernel to stop every step in reverse order; a second one
gives the `bootkit_cold_shutdown` hooks `COLD_HOOK_SECONDS` and exits with
`EXIT_COLD` at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from bootkit import log as logsetup
from bootkit.kernel import EXIT_COLD

if TYPE_CHECKING:
    from bootkit.kernel import Kernel

COLD_HOOK_SECONDS = 2.0  # what a cold shutdown gives `bootkit_cold_shutdown` hooks


def watch_signals(kernel: Kernel, on_cold: Callable[[], object]) -> None:
    """First SIGTERM/SIGINT: warm shutdown; the second: exit at once with `EXIT_COLD`.

    The work is done by a thread woken through `signal.set_wakeup_fd`, not by the
    handler: a Python handler runs between two bytecodes of the main thread, perhaps
    while it holds the log's or the kernel's lock, and taking it again would deadlock.
    """
    wanted = (signal.SIGTERM, signal.SIGINT)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)

    def watch() -> None:
        count = 0
        while True:
            signum = os.read(read_end, 1)[0]
            if signum not in wanted:
                continue
            count += 1
            name = signal.Signals(signum).name
            if count == 1:
                logsetup.logger().info("warm_shutdown", signal=name)
                kernel.request_stop()
            else:
                logsetup.logger().warning("cold_shutdown", signal=name)
                _bounded(on_cold, COLD_HOOK_SECONDS)
                sys.stderr.flush()
                os._exit(EXIT_COLD)

    threading.Thread(target=watch, name="bootkit-signals", daemon=True).start()
    for signum in wanted:
        signal.signal(signum, _ignore)


def _bounded(fn: Callable[[], object], seconds: float) -> None:
    """Run `fn` in a daemon thread for at most `seconds`; log, never raise."""

    def run() -> None:
        try:
            fn()
        except Exception:
            logsetup.logger().exception("cold_shutdown_hook_failed")

    thread = threading.Thread(target=run, name="bootkit-cold", daemon=True)
    thread.start()
    thread.join(seconds)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the watcher thread acts on the signal."""
