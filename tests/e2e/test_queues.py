"""Kinds run by task queues, end to end: a real Celery worker (threads pool, then
prefork; the stack's private Redis as broker) and a real django-tasks ``db_worker``,
driven over real sockets. One stack for the module; the last tests kill its worker
and run their own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from progrock.local.celery_worker import READY_LINE as CELERY_READY
from progrock.local.celery_worker import celery_command
from progrock.local.stack import _CHECKOUT_EXAMPLE, Stack
from tests.conftest import NewDatabase
from tests.e2e.conftest import ECHO, START_TIMEOUT
from tests.e2e.wsclient import TERMINAL, Client, assert_well_ordered, new_session

pytestmark = [pytest.mark.e2e, pytest.mark.database]

SETTINGS = "tests.e2e.queueproject.settings"
ROOT = Path(__file__).resolve().parents[2]
#: Seconds without a report before a push task fails `lost` (PROGROCK["PUSH_TIMEOUT"]).
PUSH_TIMEOUT = 4.0


def queue_stack(data_dir: Path, database_url: str | None, pool: str) -> Stack:
    env = {"PROGROCK_PUSH_TIMEOUT": str(PUSH_TIMEOUT)}
    return Stack(
        data_dir=data_dir,
        workers=1,
        echo=ECHO,
        database_url=database_url,
        settings=SETTINGS,
        pythonpath=[str(_CHECKOUT_EXAMPLE), str(ROOT)],
        celery=pool,
        env=env,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, new_database: NewDatabase) -> Iterator[Stack]:
    """A stack of the queue project with a Celery worker (threads pool)."""
    started = queue_stack(tmp_path_factory.mktemp("queues"), new_database(), "threads")
    try:
        started.start(timeout=START_TIMEOUT)
        yield started
    finally:
        started.stop()


def read_until(process: subprocess.Popen[str], name: str, ready: re.Pattern[str]) -> None:
    """Read ``process``'s output until a line matches ``ready``, then drain it in a thread."""
    assert process.stdout is not None
    for line in process.stdout:
        if ECHO:
            print(f"{name} | {line}", end="")
        if ready.search(line):
            threading.Thread(target=_drain, args=(name, process.stdout), daemon=True).start()
            return
    raise AssertionError(f"{name} exited with {process.wait()} before it was ready")


def _drain(name: str, stream: Any) -> None:
    for line in stream:
        if ECHO:
            print(f"{name} | {line}", end="")


def spawn(stack: Stack, name: str, argv: list[str], ready: str) -> subprocess.Popen[str]:
    """A Django process of the stack's project and database, once it printed ``ready``."""
    process = subprocess.Popen(
        argv,
        env=stack._env(django=True),
        cwd=str(stack.data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its pool's children are killed with it
    )
    try:
        read_until(process, name, re.compile(ready))
    except BaseException:
        reap(process)
        raise
    return process


def reap(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def wait_for_file(path: Path, content: str, timeout: float = 30.0) -> None:
    """Wait until the test task wrote ``content`` to ``path``."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text() == content):
        if time.monotonic() > deadline:
            found = path.read_text() if path.exists() else None
            raise AssertionError(f"{path} should say {content!r}, says {found!r}")
        await asyncio.sleep(0.02)


async def end_of(client: Client, task_id: str) -> dict[str, Any]:
    """The task's terminal message, whether it already arrived or is still to come."""
    for message in client.of_task(task_id):
        if message["type"] in TERMINAL:
            return message
    return await client.until_terminal(task_id)


def assert_steps(messages: list[dict[str, Any]], n: int) -> None:
    """Progress messages are the job's steps in order (reports closer together than
    the cadence may be coalesced: the newest gets through), then one end."""
    steps = [m["message"] for m in messages if m["type"] == "progress"]
    expected = [f"step {i + 1}" for i in range(n)]
    assert steps and steps[0] == "step 1", steps
    assert steps == [s for s in expected if s in steps], steps
    assert_well_ordered(messages)


async def connect(stack: Stack) -> Client:
    return await Client.connect(stack.url, new_session(stack.url))


# -- Celery ---------------------------------------------------------------------------


async def test_celery_kind_reports_progress_then_its_result(stack: Stack) -> None:
    """A socket starts a Celery kind: its first message carries the ref (the queued
    snapshot, or `started` if the job began first), then one started, progress, complete."""
    client = await connect(stack)
    await client.send({"action": "start", "kind": "steps", "params": {"n": 3}, "ref": 7})
    first = await client.recv_type("snapshot", "started", "error")
    assert first["type"] in ("snapshot", "started") and first["ref"] == 7, first
    task_id = first["task_id"]
    end = await client.until_terminal(task_id)
    assert end["type"] == "complete" and end["result"] == {"steps": 3}, end
    messages = client.of_task(task_id)
    assert [m["type"] for m in messages].count("started") == 1, messages
    assert [m.get("ref") for m in messages].count(7) == 1, messages
    assert_steps(messages, 3)
    await client.close()


async def test_celery_exception_fails_the_task_with_its_type_and_message(stack: Stack) -> None:
    """An exception in the job: failed, code task_failed, type and message, no traceback."""
    client = await connect(stack)
    task_id = await client.start(kind="broken")
    end = await client.until_terminal(task_id)
    assert end["type"] == "failed", end
    assert end["error"] == {"code": "task_failed", "detail": "LookupError: no such row: 42"}
    assert_well_ordered(client.of_task(task_id))
    await client.close()


async def test_celery_retry_is_a_progress_message_not_a_failure(stack: Stack) -> None:
    """A job that retries once shows the retry as a message, then completes; it
    started once (a retry does not announce `started` again)."""
    client = await connect(stack)
    task_id = await client.start(kind="flaky", params={"failures": 1})
    end = await client.until_terminal(task_id)
    assert end["type"] == "complete" and end["result"] == "done", end
    assert [m["type"] for m in client.of_task(task_id)].count("started") == 1
    messages = [m.get("message") for m in client.of_task(task_id) if m["type"] == "progress"]
    assert messages == ["retry 1: ConnectionError: attempt 1 failed"], messages
    await client.close()


async def test_bad_params_are_refused_before_anything_is_queued(stack: Stack) -> None:
    """Params the task does not accept: invalid_field naming them; no task is created."""
    client = await connect(stack)
    await client.send({"action": "start", "kind": "steps", "params": {"rows": 5}, "ref": "x"})
    error = await client.recv_type("error", "started")
    assert error["type"] == "error" and error["code"] == "invalid_field", error
    assert "'rows'" in error["detail"] and error["ref"] == "x", error
    await client.send({"action": "list"})
    listed = await client.recv_type("tasks")
    assert listed["tasks"] == []
    await client.close()


async def test_cancel_reaches_a_running_celery_job(stack: Stack, tmp_path: Path) -> None:
    """A cancel: the watchers get cancelled once; the working job gets Cancelled from a
    report (the next one that reaches Redis: reports closer than the cadence are held)."""
    hold, mark = tmp_path / "hold", tmp_path / "mark"
    client = await connect(stack)
    params = {"hold": str(hold), "mark": str(mark), "work": True}
    task_id = await client.start(kind="steps", params=params)
    await client.recv_type("progress")
    await client.send({"action": "cancel", "task_id": task_id})
    end = await client.until_terminal(task_id)
    assert end["type"] == "cancelled", end
    hold.touch()  # the job goes on to its next report
    await wait_for_file(mark, "cancelled")
    assert_well_ordered(client.of_task(task_id))
    await client.close()


async def test_cancel_of_a_queued_celery_job_revokes_it(stack: Stack, tmp_path: Path) -> None:
    """A job still queued behind busy workers is cancelled and never runs."""
    from progrock.local.celery_worker import CONCURRENCY

    hold = tmp_path / "hold"
    client = await connect(stack)
    busy = [
        await client.start(kind="steps", params={"hold": str(hold), "mark": str(tmp_path / str(i))})
        for i in range(CONCURRENCY)
    ]
    for i in range(CONCURRENCY):
        await wait_for_file(tmp_path / str(i), "ran")
    queued_mark = tmp_path / "queued"
    queued = await client.start(kind="steps", params={"mark": str(queued_mark)})
    await client.send({"action": "cancel", "task_id": queued})
    end = await client.until_terminal(queued)
    assert end["type"] == "cancelled", end
    hold.touch()
    for task_id in busy:
        assert (await end_of(client, task_id))["type"] == "complete"
    # A job queued after it completes: the worker got past the cancelled one.
    after = await client.start(kind="steps", params={"n": 1})
    assert (await client.until_terminal(after))["type"] == "complete"
    assert not queued_mark.exists(), "the cancelled job ran"
    assert_well_ordered(client.of_task(queued))
    await client.close()


def start_from_server_code(stack: Stack, owner: str, code: str) -> str:
    """Run ``code`` (which prints a task id) in a Django process of the stack's project."""
    script = f"import django; django.setup(); OWNER = {owner!r}\n{code}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=stack._env(django=True),
        cwd=str(stack.data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


async def test_a_celery_revoke_of_a_queued_job_cancels_its_task(
    stack: Stack, tmp_path: Path
) -> None:
    """`celery control revoke` of a job still in the broker: Celery discards it when the
    worker receives it, and its task ends cancelled."""
    from celery import Celery

    control = Celery(broker=stack.redis_url, set_as_current=False).control
    client = await connect(stack)
    mark = tmp_path / "mark"
    # The worker stops taking jobs: the next one stays in the broker.
    await asyncio.to_thread(control.cancel_consumer, "celery", reply=True)
    try:
        task_id = await client.start(kind="steps", params={"mark": str(mark)})
        await asyncio.to_thread(control.revoke, task_id)  # its Celery id is its id
    finally:
        await asyncio.to_thread(control.add_consumer, "celery", reply=True)
    end = await end_of(client, task_id)
    assert end["type"] == "cancelled", end
    assert not mark.exists(), "the revoked job ran"
    assert_well_ordered(client.of_task(task_id))
    await client.close()


async def test_progrock_celery_start_from_server_code(stack: Stack) -> None:
    """progrock.celery.start(task, *args, owner=...) returns the id a socket subscribes to."""
    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    task_id = await asyncio.to_thread(
        start_from_server_code,
        stack,
        f"session:{session}",
        "import progrock.celery\n"
        "from progrock_demo.tasks import export\n"
        "print(progrock.celery.start(export, 3, pause=0.0, owner=OWNER))",
    )
    await client.send({"action": "subscribe", "task_id": task_id})
    end = await end_of(client, task_id)
    assert end["type"] == "complete" and end["result"] == {"rows": 3}, end
    await client.close()


# -- django.tasks (django-tasks-db's db_worker) -----------------------------------------


@pytest.fixture
def db_worker(stack: Stack) -> Iterator[subprocess.Popen[str]]:
    """A real ``db_worker`` process of the stack's project and database, consuming."""
    argv = [sys.executable, "-m", "django", "db_worker", "--interval", "0.05"]
    process = spawn(stack, "db_worker", [*argv, "--no-startup-delay"], r"Starting worker")
    try:
        yield process
    finally:
        reap(process)


async def test_django_tasks_kind_reports_progress_then_its_result(
    stack: Stack, db_worker: subprocess.Popen[str]
) -> None:
    """A socket starts a django.tasks kind: started, progress, complete with the result."""
    client = await connect(stack)
    task_id = await client.start(kind="djsteps", params={"n": 2})
    end = await client.until_terminal(task_id)
    assert end["type"] == "complete" and end["result"] == {"steps": 2}, end
    assert_steps(client.of_task(task_id), 2)
    await client.close()


async def test_progrock_django_tasks_start_from_server_code(
    stack: Stack, db_worker: subprocess.Popen[str]
) -> None:
    """progrock.django_tasks.start(task, owner=..., **kwargs) from server code."""
    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    task_id = await asyncio.to_thread(
        start_from_server_code,
        stack,
        f"session:{session}",
        "import progrock.django_tasks\n"
        "from tests.e2e.queueproject.tasks import djsteps\n"
        "print(progrock.django_tasks.start(djsteps, n=2, owner=OWNER))",
    )
    await client.send({"action": "subscribe", "task_id": task_id})
    end = await end_of(client, task_id)
    assert end["type"] == "complete" and end["result"] == {"steps": 2}, end
    await client.close()


async def test_django_tasks_exception_and_cancel(
    stack: Stack, db_worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    """django.tasks: an exception fails task_failed; a cancel reaches the running job."""
    client = await connect(stack)
    failing = await client.start(kind="djsteps", params={"n": 1, "fail": True})
    end = await client.until_terminal(failing)
    assert end["error"] == {"code": "task_failed", "detail": "ValueError: bad input row"}, end
    hold, mark = tmp_path / "hold", tmp_path / "mark"
    params = {"hold": str(hold), "mark": str(mark), "work": True}
    task_id = await client.start(kind="djsteps", params=params)
    await client.recv_type("progress")
    await client.send({"action": "cancel", "task_id": task_id})
    assert (await client.until_terminal(task_id))["type"] == "cancelled"
    hold.touch()
    await wait_for_file(mark, "cancelled")
    await client.close()


async def test_a_django_tasks_job_queued_past_push_timeout_is_queued_then_runs(
    stack: Stack,
) -> None:
    """A django.tasks job enqueued while no db_worker runs waits past PUSH_TIMEOUT and a
    sweep as `queued`, not lost; a db_worker started then runs it to `complete`."""
    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    task_id = await client.start(kind="djsteps", params={"n": 2})
    await past_push_timeout(stack, client, session)
    await client.send({"action": "subscribe", "task_id": task_id})
    snapshot = await client.recv_type("snapshot")
    assert snapshot["task_id"] == task_id and snapshot["status"] == "queued", snapshot
    argv = [sys.executable, "-m", "django", "db_worker", "--interval", "0.05"]
    worker = spawn(stack, "db_worker-late", [*argv, "--no-startup-delay"], r"Starting worker")
    try:
        end = await end_of(client, task_id)
        assert end["type"] == "complete" and end["result"] == {"steps": 2}, end
    finally:
        reap(worker)
    assert [m["type"] for m in client.of_task(task_id)].count("started") == 1
    assert_steps(client.of_task(task_id), 2)
    await client.close()


async def test_a_killed_db_worker_s_task_fails_lost(
    stack: Stack, db_worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    """SIGKILL of the db_worker mid-job: the task fails `lost` within PUSH_TIMEOUT."""
    client = await connect(stack)
    task_id = await client.start(kind="djsteps", params={"hold": str(tmp_path / "never")})
    await client.recv_type("progress")
    db_worker.kill()
    end = await client.until_terminal(task_id, timeout=PUSH_TIMEOUT * 4 + 10)
    assert end["type"] == "failed" and end["error"]["code"] == "lost", end
    await client.close()


# -- the end: without the stack's Celery worker ------------------------------------------


async def test_a_killed_celery_worker_s_task_fails_lost(stack: Stack, tmp_path: Path) -> None:
    """SIGKILL of the worker mid-job: the task fails `lost` within PUSH_TIMEOUT, once.
    (Last but one: it leaves the stack's worker dead.)"""
    client = await connect(stack)
    task_id = await client.start(kind="steps", params={"hold": str(tmp_path / "never")})
    await client.recv_type("progress")
    await asyncio.to_thread(stack.kill, "celery")
    end = await client.until_terminal(task_id, timeout=PUSH_TIMEOUT * 4 + 10)
    assert end["type"] == "failed" and end["error"]["code"] == "lost", end
    assert_well_ordered(client.of_task(task_id))
    await client.close()


@pytest.fixture
def prefork_worker(stack: Stack) -> Iterator[subprocess.Popen[str]]:
    """A Celery worker with the prefork pool, in place of the stack's (threads) one."""
    stack.kill("celery")
    argv = celery_command(sys.executable, SETTINGS, "prefork")
    process = spawn(stack, "celery-prefork", argv, CELERY_READY.pattern)
    try:
        yield process
    finally:
        reap(process)


async def test_celery_prefork_pool_reports_progress_then_its_result(
    stack: Stack, prefork_worker: subprocess.Popen[str]
) -> None:
    """The same through a prefork worker: each forked child reports on its own connection."""
    client = await connect(stack)
    task_ids = [await client.start(kind="steps", params={"n": 3}) for _ in range(3)]
    for task_id in task_ids:
        end = await end_of(client, task_id)
        assert end["type"] == "complete" and end["result"] == {"steps": 3}, end
        assert_steps(client.of_task(task_id), 3)
    await client.close()


async def past_push_timeout(stack: Stack, watcher: Client, session: str) -> None:
    """Return once a sweep ran more than PUSH_TIMEOUT after now: a canary push task,
    running (not queued) and silent, created now, has failed `lost`."""
    canary = await asyncio.to_thread(
        start_from_server_code,
        stack,
        f"session:{session}",
        "import progrock\nprint(progrock.start_task('canary', owner=OWNER, push=True))",
    )
    await watcher.send({"action": "subscribe", "task_id": canary})
    lost = await watcher.until_terminal(canary, timeout=PUSH_TIMEOUT * 4 + 10)
    assert lost["type"] == "failed" and lost["error"]["code"] == "lost", lost


async def test_a_job_queued_longer_than_push_timeout_is_queued_then_runs(
    stack: Stack, tmp_path: Path
) -> None:
    """A Celery job waiting in the broker (no worker) past PUSH_TIMEOUT and a sweep is shown
    `queued` (the starting socket's answer, with its ref), not lost; once a worker starts,
    it gets `started`, runs and completes. (Last: it runs its own worker.)"""
    stack.kill("celery")  # no worker takes jobs: they wait in the broker
    session = new_session(stack.url)
    starter = await Client.connect(stack.url, session)
    watcher = await Client.connect(stack.url, session)
    await starter.send({"action": "start", "kind": "steps", "params": {"n": 2}, "ref": "q"})
    answer = await starter.recv_type("snapshot", "started", "error")  # no `started` yet
    assert (answer["type"], answer["status"], answer["ref"]) == ("snapshot", "queued", "q")
    task_id = answer["task_id"]
    await past_push_timeout(stack, watcher, session)
    await watcher.send({"action": "subscribe", "task_id": task_id})
    snapshot = await watcher.recv_type("snapshot")
    assert snapshot["task_id"] == task_id and snapshot["status"] == "queued", snapshot
    argv = celery_command(sys.executable, SETTINGS, "threads")
    worker = spawn(stack, "celery-late", argv, CELERY_READY.pattern)
    try:
        end = await end_of(starter, task_id)
        assert end["type"] == "complete" and end["result"] == {"steps": 2}, end
    finally:
        reap(worker)
    messages = starter.of_task(task_id)
    assert [m["type"] for m in messages[:2]] == ["snapshot", "started"], messages
    assert [m["type"] for m in messages].count("started") == 1, messages
    assert_steps(messages, 2)
    await starter.close()
    await watcher.close()
