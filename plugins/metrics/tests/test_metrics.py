"""The metrics endpoint of a real worker, scraped over HTTP after it ran known tasks."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bootkit_amqp_consumer import App, TaskRevokedError
from bootkit_amqp_consumer.pidbox import call
from e2e_support import WAIT, Broker, StartWorker, wait_until
from e2e_tasks import ADD, FAIL, WORK, read_ledger


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_scraped_counts_match_the_tasks_run(start_worker: StartWorker, client: App) -> None:
    port = free_port()
    start_worker("--metrics-port", str(port))
    for i in range(5):
        assert client.send_task(ADD, [i, 1]).get(timeout=WAIT) == i + 1
    with pytest.raises(ValueError, match="no"):
        client.send_task(FAIL, ["no"]).get(timeout=WAIT)

    def settled() -> dict[Any, float]:
        samples = scrape(port)
        done = (
            samples[("bootkit_tasks_succeeded_total", ())]
            + samples[("bootkit_tasks_failed_total", ())]
        )
        return samples if done == 6 else {}

    samples = wait_until(settled, "six outcomes in the metrics")
    assert samples[("bootkit_tasks_succeeded_total", ())] == 5
    assert samples[("bootkit_tasks_failed_total", ())] == 1
    assert samples[("bootkit_tasks_received_total", (("task", ADD),))] == 5
    assert samples[("bootkit_tasks_received_total", (("task", FAIL),))] == 1
    assert samples[("bootkit_task_runtime_seconds_count", ())] == 6
    assert samples[("bootkit_task_runtime_seconds_bucket", (("le", "+Inf"),))] == 6
    assert samples[("bootkit_tasks_active", ())] == 0
    assert samples[("bootkit_pool_size", ())] == 2
    assert samples[("bootkit_prefetch_count", ())] == 8
    running = (("blueprint", "consumer"), ("state", "running"), ("step", "amqp.loop"))
    assert samples[("bootkit_step_state", running)] == 1
    boot = (("blueprint", "worker"), ("phase", "start"), ("step", "amqp.consumer"))
    assert samples[("bootkit_step_seconds", boot)] > 0


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["prefork", "prefork-children"])
def test_a_terminated_task_counts_as_revoked_not_failed(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path, pool: str
) -> None:
    port, node = free_port(), f"m-{uuid.uuid4().hex[:8]}@host"
    start_worker(
        "-n", node, "--control-allow", "all", "--metrics-port", str(port), pool=pool, concurrency=1
    )
    victim = client.send_task(WORK, [str(ledger), "victim", 30.0])
    wait_until(
        lambda: any(e.event == "start" and e.tag == "victim" for e in read_ledger(ledger)),
        "the victim started",
    )
    arguments = {"task_id": victim.id, "terminate": True, "signal": "SIGKILL"}
    with broker.connection() as connection:
        call(connection, "revoke", arguments, destination=[node], timeout=WAIT)
    with pytest.raises(TaskRevokedError):
        victim.get(timeout=WAIT)

    def counted() -> dict[Any, float]:
        samples = scrape(port)
        return samples if samples[("bootkit_tasks_revoked_total", ())] == 1 else {}

    samples = wait_until(counted, "the terminated task in the metrics")
    assert samples[("bootkit_tasks_failed_total", ())] == 0
