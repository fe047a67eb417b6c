"""A Celery 5.7 app holding two of the e2e tasks' names, for a real Celery worker.

The interop tests run ``celery -A celery_peer -b BROKER --result-backend URL worker``
and send to it with bootkit's client.
"""

from __future__ import annotations

import celery  # type: ignore[import-untyped, unused-ignore]  # celery ships no types

app = celery.Celery("celery_peer")


@app.task(name="e2e.add")  # type: ignore[untyped-decorator, misc, unused-ignore]
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="e2e.fail")  # type: ignore[untyped-decorator, misc, unused-ignore]
def fail(message: str) -> None:
    raise ValueError(message)
