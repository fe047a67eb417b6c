"""--autoscale: the decision rule, and a real worker under a burst of tasks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from bootkit import ConfigError
from bootkit_amqp_consumer import App
from bootkit_amqp_consumer.pidbox import call
from bootkit_autoscale.steps import TICK, Scaler, parse
from e2e_support import WAIT, Broker, StartWorker, events, wait_until
from e2e_tasks import WORK


def test_parse_takes_max_comma_min() -> None:
    assert parse("4,1") == (4, 1)
    assert parse("3") == (3, 1)
    for bad in ("", "x,1", "1,4", "0,0", "4,1,2"):
        with pytest.raises(ConfigError, match="--autoscale"):
            parse(bad)


def test_scaler_grows_for_waiting_tasks_and_shrinks_after_the_cooldown() -> None:
    scaler = Scaler(high=4, low=1, cooldown=2.0, now=0.0)
    assert scaler.decide(size=1, busy=1, waiting=10, now=0.0) == 4
    assert scaler.decide(size=4, busy=4, waiting=10, now=1.0) == 4
    assert scaler.decide(size=4, busy=2, waiting=0, now=2.0) == 4  # lull, within cooldown
    assert scaler.decide(size=4, busy=1, waiting=0, now=3.5) == 1  # 2.5 s since busy
    assert scaler.decide(size=1, busy=0, waiting=0, now=10.0) == 1  # never below MIN
    assert scaler.decide(size=2, busy=1, waiting=1, now=11.0) == 3  # one more per waiting


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize(
    ("pool", "burst", "seconds"),
    # The first: the acceptance's own figures.
    [("threads", 200, 1.0), ("prefork", 24, 0.5), ("prefork-children", 24, 0.5)],
)
def test_a_burst_grows_the_pool_to_max_and_it_returns_to_min(
    start_worker: StartWorker,
    broker: Broker,
    client: App,
    ledger: Path,
    pool: str,
    burst: int,
    seconds: float,
) -> None:
    node = f"as-{uuid.uuid4().hex[:8]}@host"
    worker = start_worker("-n", node, "--autoscale", "4,1", "--autoscale-cooldown", "1", pool=pool)
    began = time.monotonic()
    results = [client.send_task(WORK, [str(ledger), f"b{i}", seconds]) for i in range(burst)]

    def size() -> int:
        with broker.connection() as connection:
            (reply,) = call(connection, "stats", destination=[node], timeout=WAIT)
        autoscaler: dict[str, int] = reply[node]["autoscaler"]
        return autoscaler["qty"]

    wait_until(lambda: size() == 4, "the pool at 4")
    grown = time.monotonic() - began
    for result in results:
        result.get(timeout=burst * seconds)
    drained = time.monotonic() - began
    wait_until(lambda: size() == 1, "the pool back at 1", timeout=WAIT)
    back = time.monotonic() - began

    # The pool's size is logged before a stats reply shows it; the log's reader may lag.
    def logged_sizes() -> list[int]:
        found = [e["size"] for e in events(worker, "pool_autoscaled")]
        return found if found and found[-1] == 1 else []

    sizes = wait_until(logged_sizes, "the shrink back to 1 logged")
    print(
        f"\nautoscale 4,1, {pool}: {burst} x {seconds}s tasks; at 4 after {grown:.1f}s, burst done "
        f"after {drained:.1f}s, back at 1 after {back:.1f}s; sizes {sizes}"
    )
    assert max(sizes) == 4
    assert sizes[0] == 1
    assert sizes[-1] == 1
    assert drained < burst * seconds / 4 + 2 * TICK  # four at a time, once grown
