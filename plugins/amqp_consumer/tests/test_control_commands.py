"""Every remote control command against real worker subprocesses: what each inspect
command reports, the allowlist refusing destructive commands, and each destructive
command doing what it says once allowed; the CLI; Celery's CLI reading the replies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bootkit_amqp_consumer import App, TaskRevokedError, TimeLimitExceededError
from bootkit_amqp_consumer.pidbox import call
from bootkit_amqp_consumer.ratelimit import RateLimits, TokenBucket, parse_rate
from e2e_support import (
    WAIT,
    Broker,
    StartWorker,
    stop,
    unique,
    wait_for_events,
    wait_until,
    worker_env,
)
from e2e_tasks import WORK, read_ledger

pytestmark = pytest.mark.reliability  # the M and S rows of docs/reliability.md

GATED: dict[str, dict[str, Any]] = {
    "shutdown": {},
    "pool_grow": {"n": 1},
    "pool_shrink": {"n": 1},
    "rate_limit": {"task_name": WORK, "rate_limit": "1/s"},
    "time_limit": {"task_name": WORK, "soft": 1, "hard": 2},
    "add_consumer": {"queue": "anything"},
    "cancel_consumer": {"queue": "anything"},
}


def ask(broker: Broker, node: str, method: str, **arguments: Any) -> Any:
    """One node's reply to one command."""
    with broker.connection() as connection:
        replies = call(connection, method, arguments, destination=[node], timeout=WAIT)
    assert len(replies) == 1, f"{method}: {replies}"
    return replies[0][node]


def started(ledger: Path, tag: str) -> bool:
    return any(e.event == "start" and e.tag == tag for e in read_ledger(ledger))


# -- rate limits, as plain logic ---------------------------------------------------


def test_rate_limits_parse_as_celery_spells_them() -> None:
    assert parse_rate("10/s") == 10.0
    assert parse_rate("120/m") == 2.0
    assert parse_rate("3600/h") == 1.0
    assert parse_rate(5) == 5.0
    assert parse_rate("2.5") == 2.5
    for none in (None, 0, "", "0", "0/m"):
        assert parse_rate(none) is None
    for bad in ("fast", "10/d", "-1/s", True):
        with pytest.raises(ValueError, match="rate limit"):
            parse_rate(bad)


def test_token_bucket_gives_one_token_per_interval() -> None:
    bucket = TokenBucket(2.0)
    assert bucket.take(now=bucket._at) == 0.0  # starts full
    assert bucket.take(now=bucket._at) == pytest.approx(0.5)
    assert bucket.take(now=bucket._at + 0.25) == pytest.approx(0.25)
    assert bucket.take(now=bucket._at + 0.25) == 0.0


def test_the_rate_in_force_is_the_run_time_one_times_the_share() -> None:
    overrides: dict[str, float | None] = {}
    limits = RateLimits(overrides)
    assert limits.wait("t", None) == limits.wait("t", None) == 0.0  # no limit: never waits
    assert limits.wait("t", "1/s") == 0.0  # the bucket starts with one token
    assert 0.5 < limits.wait("t", "1/s") <= 1.0  # the task's own rate
    overrides["t"] = None  # rate_limit at run time: none, whatever the task says
    assert limits.wait("t", "1/s") == limits.wait("t", "1/s") == 0.0
    overrides["t"], limits.share = 10.0, 0.5  # half of 10/s here: a token every 0.2 s
    assert limits.wait("t", "1/s") == 0.0
    assert 0.1 < limits.wait("t", "1/s") <= 0.2


# -- inspect, and the allowlist ----------------------------------------------------


def test_inspect_commands_describe_the_worker_and_destructive_ones_are_refused(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path, queue: str
) -> None:
    node = f"ctl-{uuid.uuid4().hex[:8]}@host"
    worker = start_worker("-n", node)
    running = client.send_task(WORK, [str(ledger), "long", 2.0])
    held = client.send_task(WORK, [str(ledger), "held"], countdown=60)
    wait_until(lambda: started(ledger, "long"), "the long task started")

    assert ask(broker, node, "ping") == {"ok": "pong"}
    (active,) = ask(broker, node, "active")
    assert (active["id"], active["name"], active["hostname"]) == (running.id, WORK, node)
    assert active["args"] == [str(ledger), "long", 2.0]
    assert active["delivery_info"]["routing_key"] == queue
    wait_until(lambda: ask(broker, node, "scheduled"), "the held task in scheduled")
    (scheduled,) = ask(broker, node, "scheduled")
    assert scheduled["request"]["id"] == held.id
    assert scheduled["eta"]
    assert ask(broker, node, "query_task", ids=[running.id, held.id, "nope"]) == {
        running.id: ["active", active],
        held.id: ["scheduled", scheduled["request"]],
    }
    assert ask(broker, node, "reserved") == []
    assert WORK in ask(broker, node, "registered")
    assert ask(broker, node, "clock")["clock"] > 0
    assert [q["name"] for q in ask(broker, node, "active_queues")] == [queue]

    stats = ask(broker, node, "stats")
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["total"][WORK] == 2
    text = json.dumps([stats, ask(broker, node, "conf"), ask(broker, node, "report")])
    assert ":guest@" not in text  # the broker password never leaves the worker
    assert "**" in stats["broker"]["uri"]

    for method, arguments in GATED.items():
        reply = ask(broker, node, method, **arguments)
        assert reply == {
            "error": f"{method} is not allowed on this worker (allow it with --control-allow {method})"
        }
    refused = ask(broker, node, "revoke", task_id=held.id, terminate=True)
    assert "terminate is not allowed" in refused["error"]
    wait_for_events(worker, "control_command_refused", len(GATED) + 1)  # logged, then replied
    assert ask(broker, node, "nosuch") == {"error": "no such command: nosuch"}
    assert ask(broker, node, "revoke", task_id=17) == {
        "error": "task_id must be a task id or a list of them, got 17"
    }

    assert ask(broker, node, "revoke", task_id=held.id) == {
        "ok": f"tasks {held.id} flagged as revoked"
    }
    assert held.id in ask(broker, node, "revoked")
    # Mingle's hello: ids in Celery 5.7's list form and in the {id: [ts, id]} form.
    listed, mapped = str(uuid.uuid4()), str(uuid.uuid4())
    for revoked in ([listed], {mapped: [time.time(), mapped]}):
        reply = ask(broker, node, "hello", from_node="peer@host", revoked=revoked)
        assert reply["clock"] > 0
    assert {listed, mapped} <= set(ask(broker, node, "revoked"))
    assert running.get(timeout=WAIT) == "long"
    assert stop(worker) == 0


# -- destructive commands, allowed -------------------------------------------------


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("pool", ["prefork", "prefork-children"])
def test_allowed_commands_change_the_pool_limits_queues_and_stop_the_worker(
    start_worker: StartWorker, broker: Broker, client: App, ledger: Path, pool: str
) -> None:
    node = f"ctl-{uuid.uuid4().hex[:8]}@host"
    worker = start_worker("-n", node, "--control-allow", "all", pool=pool, concurrency=1)

    assert ask(broker, node, "pool_grow", n=2) == {"ok": "pool will grow by 2"}
    assert ask(broker, node, "stats")["pool"]["max-concurrency"] == 3
    assert ask(broker, node, "pool_shrink", n=1) == {"ok": "pool will shrink by 1"}
    assert ask(broker, node, "stats")["pool"]["max-concurrency"] == 2
    assert "error" in ask(broker, node, "pool_grow", n="many")

    # A rate limit spaces runs out: 2/s lets four tasks start over at least 1.5 s. Two
    # children consuming for themselves keep 1/s each: two start at once, two a second
    # later.
    assert "error" in ask(broker, node, "rate_limit", task_name="no.such", rate_limit="1/s")
    ask(broker, node, "rate_limit", task_name=WORK, rate_limit="2/s")
    burst = [client.send_task(WORK, [str(ledger), f"r{i}"]) for i in range(4)]
    for result in burst:
        result.get(timeout=WAIT)
    starts = sorted(e.at for e in read_ledger(ledger) if e.tag.startswith("r"))
    assert starts[-1] - starts[0] >= (0.9 if pool == "prefork-children" else 1.3), starts
    ask(broker, node, "rate_limit", task_name=WORK, rate_limit=0)

    # A hard time limit set remotely kills a task that runs past it.
    ask(broker, node, "time_limit", task_name=WORK, soft=None, hard=0.5)
    with pytest.raises(TimeLimitExceededError):
        client.send_task(WORK, [str(ledger), "slow", 5.0]).get(timeout=WAIT)
    ask(broker, node, "time_limit", task_name=WORK, soft=None, hard=None)

    # A queue added at run time is consumed; cancelled, it is not.
    extra = unique("extra")
    try:
        assert ask(broker, node, "add_consumer", queue=extra) == {"ok": f"add consumer {extra}"}
        assert extra in [q["name"] for q in ask(broker, node, "active_queues")]
        assert client.send_task(WORK, [str(ledger), "extra"], queue=extra).get(timeout=WAIT)
        assert ask(broker, node, "cancel_consumer", queue=extra)["ok"]
        assert extra not in [q["name"] for q in ask(broker, node, "active_queues")]
    finally:
        broker.delete(extra)

    # revoke --terminate kills a running task: started, never done, result REVOKED.
    victim = client.send_task(WORK, [str(ledger), "victim", 30.0])
    wait_until(lambda: started(ledger, "victim"), "the victim started")
    reply = ask(broker, node, "revoke", task_id=victim.id, terminate=True, signal="SIGKILL")
    assert reply["ok"].endswith(f"terminated: ['{victim.id}']")
    with pytest.raises(TaskRevokedError):
        victim.get(timeout=WAIT)
    assert not any(e.event == "done" and e.tag == "victim" for e in read_ledger(ledger))

    assert ask(broker, node, "shutdown") == {"ok": "shutting down"}
    assert worker.wait(WAIT) == 0


# -- the command line --------------------------------------------------------------


def bootkit(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootkit", *args],
        env={**worker_env(tmp_path, "cli"), **(env or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_cli_and_celery_cli_reach_the_worker(
    start_worker: StartWorker, broker: Broker, tmp_path: Path
) -> None:
    node = f"ctl-{uuid.uuid4().hex[:8]}@host"
    start_worker("-n", node)

    done = bootkit(tmp_path, "inspect", "ping", "--json", "-d", node, "-b", broker.url)
    assert (done.returncode, json.loads(done.stdout)) == (0, {node: {"ok": "pong"}})

    done = bootkit(tmp_path, "inspect", "stats", "-d", node, "-b", broker.url)
    assert done.returncode == 0
    assert done.stdout.startswith(f"-> {node}: OK")
    assert done.stdout.rstrip().endswith("1 node online.")

    done = bootkit(tmp_path, "control", "shutdown", "-d", node, "-b", broker.url)
    assert done.returncode == 1
    assert "ERROR shutdown is not allowed" in done.stdout

    done = bootkit(tmp_path, "inspect", "ping", "-d", "nobody@host", "-t", "0.3", "-b", broker.url)
    assert (done.returncode, done.stderr) == (1, "bootkit: no worker replied within 0.3s\n")

    done = bootkit(tmp_path, "inspect", "shutdown", "-b", broker.url)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "is a `bootkit control` command" in done.stderr

    # bootkit analyze --node asks the live worker for its run record.
    on_broker = {"BOOTKIT_BROKER": broker.url}
    done = bootkit(tmp_path, "analyze", "critical-chain", "--node", node, env=on_broker)
    assert done.returncode == 0, done.stderr
    assert "amqp.consumer @" in done.stdout
    assert "  amqp.loop @" in done.stdout  # the consumer blueprint, beneath its host
    done = bootkit(tmp_path, "analyze", "blame", "--node", "nobody@host", env=on_broker)
    assert done.returncode == 2
    assert done.stderr.startswith("bootkit: error: --node nobody@host: no reply within 5s")

    celery = [sys.executable, "-m", "celery", "-b", broker.url]
    for command in (["inspect", "stats"], ["inspect", "active"], ["inspect", "registered"]):
        done = subprocess.run(
            [*celery, *command, "-d", node],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
            env={**os.environ},
        )
        assert done.returncode == 0, done.stderr
        assert f"{node}: OK" in done.stdout
