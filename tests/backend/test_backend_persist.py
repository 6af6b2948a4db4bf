"""The reference backend's task file: a backend started again on it continues its tasks."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from progrock.local.backend.kinds import generate_stream
from progrock.local.backend.store import TaskStore
from progrock.local.backend.testing import start_backend

ROCK = {"step": 10, "interval_ms": 1000}  # 10 % a second, done after 10 s


class Clocks:
    """A monotonic and a wall clock that move together; a new process starts the
    monotonic one elsewhere (``restart``)."""

    def __init__(self) -> None:
        self.mono, self.wall = 100.0, 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def restart(self) -> None:
        self.mono = 5.0  # another process: its own monotonic origin

    def store(self, path: Path, **options: Any) -> TaskStore:
        return TaskStore(
            clock=lambda: self.mono, wall_clock=lambda: self.wall, path=path, **options
        )


def test_a_restarted_store_continues_rock_tasks_where_the_clock_says(tmp_path: Path) -> None:
    """Rock tasks keep their ids, keys, creation times and progress by elapsed time
    across a restart; a task that ended meanwhile shows its end."""
    clocks, path = Clocks(), tmp_path / "tasks.sqlite3"
    first = clocks.store(path)
    short = first.create("rock", ROCK, key="k-short")
    long = first.create("rock", {**ROCK, "interval_ms": 10_000}, key="k-long")
    clocks.advance(3.5)
    assert first.get(short["id"])["progress"] == 30  # type: ignore[index]
    first.close()
    clocks.restart()
    clocks.advance(4.0)  # down 4 s: 7.5 s since the start
    second = clocks.store(path)
    assert len(second) == 2
    assert second.get(short["id"]) == {**short, "progress": 70.0, "message": "rocking 70%"}
    assert second.by_key("k-long") == {**long, "progress": 0.0, "message": "rocking 0%"}
    clocks.advance(3.0)
    done = second.get(short["id"])
    assert done is not None and done["state"] == "succeeded" and done["result"] == {"riffs": 10}
    again = second.create("rock", ROCK, key="k-short")  # app answers by_key first, as before
    assert again["id"] != short["id"] and second.by_key("k-short")["id"] == again["id"]  # type: ignore[index]
    second.close()


def test_a_cancel_survives_a_restart_and_the_sweep_forgets_from_the_file(tmp_path: Path) -> None:
    """A cancelled task stays cancelled at the progress it had; tasks the TTL sweep forgets
    are gone from the file too."""
    clocks, path = Clocks(), tmp_path / "tasks.sqlite3"
    first = clocks.store(path, ttl=60)
    task = first.create("rock", ROCK)
    clocks.advance(2.2)
    assert first.cancel(task["id"]) is not None
    first.close()
    clocks.restart()
    clocks.advance(30)
    second = clocks.store(path, ttl=60)
    view = second.get(task["id"])
    assert view is not None and view["state"] == "cancelled" and view["progress"] == 20
    clocks.advance(31)  # the cancel was 61 s ago
    assert second.sweep() == 1
    second.close()
    third = clocks.store(path, ttl=60)
    assert len(third) == 0 and third.get(task["id"]) is None
    third.close()


def test_a_hash_task_survives_a_restart_with_the_same_digest(tmp_path: Path) -> None:
    """A hash task interrupted by a restart hashes again, its progress never below what it
    showed, and ends with the digest of its stream; its end is in the file, so the next
    restart shows it without hashing."""
    path = tmp_path / "tasks.sqlite3"
    first = TaskStore(path=path, hash_workers=1)
    task = first.create("hash", {"mb": 8, "rate_mb_s": 2})  # about 4 s
    time.sleep(1.2)
    first.close()  # stopped midway, as by SIGTERM
    shown = first.get(task["id"])
    assert shown is not None and 0 < shown["progress"] < 100, shown
    second = TaskStore(path=path)
    resumed = second.get(task["id"])
    assert resumed is not None and resumed["progress"] >= shown["progress"], (shown, resumed)
    deadline = time.monotonic() + 30
    while (view := second.get(task["id"])) is not None and view["state"] == "running":
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    expected = hashlib.sha256(b"".join(generate_stream(8))).hexdigest()
    assert view is not None and view["state"] == "succeeded", view
    assert view["result"] == {"sha256": expected, "bytes": 8 * 1024 * 1024}
    second.close()
    third = TaskStore(path=path)
    assert third.get(task["id"]) == view
    third.close()


def get(url: str, body: object | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_killed_backend_started_again_on_its_file_continues_its_tasks(tmp_path: Path) -> None:
    """SIGKILL the backend process: started again on the same --data file (another port),
    it knows every task, their progress continues and they complete."""
    path = tmp_path / "backend.sqlite3"
    first = start_backend(extra_args=["--data", str(path)])
    try:
        quick = {"step": 25, "interval_ms": 500}  # done after 2 s
        created = [get(f"{first.url}/tasks", {"kind": "rock", "params": quick}) for _ in range(5)]
        time.sleep(0.6)
        before = get(f"{first.url}/tasks/status", {"ids": [t["id"] for t in created]})["tasks"]
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    finally:
        first.stop()
    second = start_backend(extra_args=["--data", str(path)])
    try:
        ids = [t["id"] for t in created]
        after = get(f"{second.url}/tasks/status", {"ids": ids})["tasks"]
        for task_id in ids:
            assert after[task_id] is not None, f"{task_id} forgotten"
            assert after[task_id]["progress"] >= before[task_id]["progress"] >= 25
        deadline = time.monotonic() + 30
        while any(after[t]["state"] == "running" for t in ids):
            assert time.monotonic() < deadline, after
            time.sleep(0.2)
            after = get(f"{second.url}/tasks/status", {"ids": ids})["tasks"]
        assert [after[t]["state"] for t in ids] == ["succeeded"] * 5
    finally:
        second.stop()


def test_an_unreadable_task_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A --data file that is not a task file: exit 2, one line naming the file."""
    path = tmp_path / "not-a-database"
    path.write_bytes(b"this is not SQLite" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "progrock.local.backend", "--port", "0", "--data", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"progrock-backend: cannot use the task file {str(path)!r}: ")


def test_a_task_file_with_a_task_it_cannot_read_names_the_task(tmp_path: Path) -> None:
    """A row whose params this backend refuses: the error names the task and the file."""
    path = tmp_path / "tasks.sqlite3"
    TaskStore(path=path).close()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO tasks (id, kind, params, created_at, started_at)"
            " VALUES ('t1', 'rock', '{\"step\": -1}', 0, 0)"
        )
    with pytest.raises(ValueError, match=r"task 't1' in the task file .*'step' must be > 0"):
        TaskStore(path=path)
