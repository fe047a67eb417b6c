"""`bootkit.log`: each event is one line, written whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WRITERS = 4
EVENTS = 400

# Each writer logs through bootkit, its stderr the one pipe all of them share, as a
# prefork pool's parent and children share theirs.
WRITER = """
import sys
from bootkit import log
log.configure("info", "json")
for i in range(int(sys.argv[1])):
    log.logger().info("tick", writer=sys.argv[2], i=i, pad="x" * 200)
"""


def test_lines_of_processes_sharing_a_stderr_never_run_together(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    read, write = os.pipe()
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), str(EVENTS), str(n)],
            stderr=write,
            stdout=subprocess.DEVNULL,
        )
        for n in range(WRITERS)
    ]
    os.close(write)
    with os.fdopen(read, encoding="utf-8") as pipe:
        lines = pipe.read().splitlines()
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    events = [json.loads(line) for line in lines]  # a line run into another fails here
    assert len(events) == WRITERS * EVENTS
    for n in range(WRITERS):
        mine = [e["i"] for e in events if e["writer"] == str(n)]
        assert mine == list(range(EVENTS))


def test_an_event_is_one_write_of_its_line(tmp_path: Path) -> None:
    # stderr replaced by a StringIO that keeps each write apart.
    code = """
import io, json, sys
from bootkit import log

class Writes(io.StringIO):
    def __init__(self):
        super().__init__()
        self.calls = []
    def write(self, text):
        self.calls.append(text)
        return super().write(text)

sys.stderr = out = Writes()
log.configure("info", "json")
log.logger().info("one", n=1)
log.logger().warning("two", n=2)
sys.__stdout__.write(json.dumps(out.calls))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    calls = json.loads(done.stdout)
    assert len(calls) == 2
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in calls)
    assert [json.loads(call)["event"] for call in calls] == ["one", "two"]
