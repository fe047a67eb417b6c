"""Worker state that outlives a consumer restart: revoked ids and counters."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class WorkerState:
    """What outlives a consumer restart: counters, revoked ids, redelivery counts."""

    revoked: dict[str, float] = field(default_factory=dict)
    lost: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    processed: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Callbacks that hand unacknowledged messages back to the broker at once; the
    # running consumer registers one, a cold shutdown calls them.
    on_cold: list[Callable[[], None]] = field(default_factory=list)

    def revoke(self, task_id: str) -> None:
        with self.lock:
            self.revoked[task_id] = time.time()

    def is_revoked(self, task_id: str) -> bool:
        with self.lock:
            return task_id in self.revoked
