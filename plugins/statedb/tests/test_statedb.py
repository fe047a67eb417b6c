"""--statedb: revoked ids survive a restart; a kill -9 mid-write leaves a whole file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from bootkit import ConfigError, write_atomically
from bootkit_amqp_consumer import App, TaskRevokedError
from bootkit_statedb.steps import read
from e2e_support import WAIT, StartWorker, events, stop, wait_for_events, wait_until
from e2e_tasks import WORK, read_ledger


def saved_ids(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text())["revoked"])
    except (FileNotFoundError, ValueError, KeyError):
        return set()


def test_atomic_write_and_a_clear_error_for_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read(path) is None
    write_atomically(path, b'{"version": 1, "clock": 3, "revoked": {}}')
    assert read(path) == {"version": 1, "clock": 3, "revoked": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"--statedb {path}: cannot read it"):
        read(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a bootkit state file"):
        read(path)


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_a_task_revoked_before_a_restart_is_refused_after_it(
    start_worker: StartWorker, client: App, ledger: Path, tmp_path: Path
) -> None:
    statedb = tmp_path / "worker.state"
    first = start_worker("--statedb", str(statedb))
    revoked = str(uuid.uuid4())
    client.revoke(revoked)
    wait_for_events(first, "tasks_revoked", 1)
    wait_until(lambda: revoked in saved_ids(statedb), "the revoke written to the state file")
    assert stop(first) == 0

    second = start_worker("--statedb", str(statedb))
    (loaded,) = events(second, "statedb_loaded")
    assert loaded["revoked"] >= 1
    result = client.send_task(WORK, [str(ledger), "revoked"], task_id=revoked)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=WAIT)
    assert client.send_task(WORK, [str(ledger), "other"]).get(timeout=WAIT) == "other"
    assert [e.tag for e in read_ledger(ledger)] == ["other", "other"]  # start, done


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_kill_9_while_the_state_is_written_leaves_a_readable_file(
    start_worker: StartWorker, client: App, tmp_path: Path
) -> None:
    statedb = tmp_path / "worker.state"
    worker = start_worker("--statedb", str(statedb))
    many = [str(uuid.uuid4()) for _ in range(20_000)]  # each write is then ~1 MB
    client.revoke(many)
    wait_until(lambda: len(saved_ids(statedb)) >= 20_000, "the big revoke written")
    for _ in range(200):  # a stream of changes: the writer is busy when the kill lands
        client.revoke(str(uuid.uuid4()))
    wait_until(lambda: len(events(worker, "tasks_revoked")) >= 50, "revokes arriving")
    worker.proc.kill()
    worker.wait(WAIT)

    saved = json.loads(statedb.read_text())
    assert saved["version"] == 1
    assert set(many) <= set(saved["revoked"])
