"""Task lifecycle end to end: watchers, resume, ownership, cancel, failures, recovery."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import redis

from progrock.local.backend.testing import BackendProcess, start_backend
from progrock.local.stack import Stack
from tests.conftest import NewDatabase
from tests.e2e.conftest import ECHO, MakeStack
from tests.e2e.taskrows import backend_ref, queued_task_ids
from tests.e2e.wsclient import Client, assert_well_ordered, new_session

pytestmark = [pytest.mark.e2e, pytest.mark.database]

FAST = {"kind": "rock", "params": {"interval_ms": 20}}  # done in about 0.7 s
SLOW = {"kind": "rock", "params": {"interval_ms": 400}}  # about 13.6 s


def backend_state(backend_url: str, ref: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{backend_url}/tasks/{ref}", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


# -- watchers, resume, late subscribers ----------------------------------------------


async def test_two_sockets_of_the_owner_watch_one_task_to_the_end(stack: Stack) -> None:
    """A second tab of the same session subscribes and both see the task complete."""
    session = new_session(stack.url)
    first = await Client.connect(stack.url, session)
    second = await Client.connect(stack.url, session)
    task_id = await first.start(kind="rock", params={"interval_ms": 100})
    await second.send({"action": "subscribe", "task_id": task_id})
    snapshot = await second.recv_type("snapshot")
    assert snapshot["task_id"] == task_id and snapshot["status"] == "running"
    a, b = await asyncio.gather(first.until_terminal(task_id), second.until_terminal(task_id))
    assert a["type"] == b["type"] == "complete"
    assert_well_ordered(first.of_task(task_id))
    assert_well_ordered(second.of_task(task_id))
    await first.close()
    await second.close()


async def test_reconnecting_socket_gets_a_snapshot_then_the_rest(stack: Stack) -> None:
    """A socket that drops mid-task and re-subscribes gets the state at once, then the end."""
    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    task_id = await client.start(**SLOW)
    seen = await client.recv_type("progress")
    await client.close()
    await asyncio.sleep(1.0)  # the task moves on while nobody watches
    again = await Client.connect(stack.url, session)
    await again.send({"action": "subscribe", "task_id": task_id})
    snapshot = await again.recv(timeout=5)
    assert snapshot["type"] == "snapshot", snapshot
    assert snapshot["seq"] > seen["seq"] and snapshot["progress"] > seen["progress"]
    final = await again.until_terminal(task_id, timeout=40)
    assert final["type"] == "complete"
    later = [m for m in again.of_task(task_id) if m["type"] != "snapshot"]
    assert all(m["seq"] > snapshot["seq"] for m in later)
    await again.close()


async def test_subscribing_after_the_end_gets_the_terminal_state(stack: Stack) -> None:
    """A watcher arriving after completion gets a snapshot and then exactly one complete."""
    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    task_id = await client.start(**FAST)
    done = await client.until_terminal(task_id)
    await client.close()
    late = await Client.connect(stack.url, session)
    await late.send({"action": "subscribe", "task_id": task_id})
    snapshot = await late.recv()
    terminal = await late.recv()
    assert snapshot["type"] == "snapshot" and snapshot["status"] == "succeeded"
    assert terminal == done
    await late.send({"action": "list"})
    listing = await late.recv_type("tasks")
    assert task_id in [t["task_id"] for t in listing["tasks"]]
    await late.close()


async def test_progress_carries_rate_and_eta(stack: Stack) -> None:
    """After two polls, progress messages carry a positive rate and an ETA."""
    client = await Client.connect(stack.url)
    task_id = await client.start(kind="rock", params={"interval_ms": 100})
    await client.until_terminal(task_id)
    estimated = [m for m in client.of_task(task_id) if m["type"] == "progress" and m["eta_s"]]
    assert estimated, client.of_task(task_id)
    assert all(m["rate"] > 0 for m in estimated)
    await client.close()


# -- ownership -------------------------------------------------------------------


async def test_another_session_cannot_subscribe_or_cancel(stack: Stack) -> None:
    """Other users get forbidden, exactly as for an unknown id, and the task is untouched."""
    owner = await Client.connect(stack.url, new_session(stack.url))
    task_id = await owner.start(kind="rock", params={"interval_ms": 100})
    stranger = await Client.connect(stack.url, new_session(stack.url))
    unknown = str(uuid.uuid4())
    answers = []
    for action, target in (
        ("subscribe", task_id),
        ("cancel", task_id),
        ("subscribe", unknown),
        ("cancel", unknown),
    ):
        await stranger.send({"action": action, "task_id": target})
        answers.append(await stranger.recv())
    for answer, target in zip(answers, [task_id, task_id, unknown, unknown], strict=True):
        assert answer["type"] == "error" and answer["code"] == "forbidden", answer
        assert answer["detail"] == f"no task {target} that this socket may see"
    assert (await owner.until_terminal(task_id))["type"] == "complete"
    await owner.close()
    await stranger.close()


# -- malformed input ---------------------------------------------------------------


async def test_malformed_frames_get_errors_and_the_socket_stays_usable(stack: Stack) -> None:
    """Garbage of every kind is answered with an error frame; then a start still works."""
    client = await Client.connect(stack.url)
    bad: list[tuple[str | bytes, str]] = [
        ("{not json", "bad_json"),
        ("[]", "bad_message"),
        ('"start"', "bad_message"),
        ('{"action": null}', "bad_message"),
        ('{"action": "explode"}', "unknown_action"),
        ('{"action": "start", "kind": "nope"}', "unknown_kind"),
        ('{"action": "start", "params": "x"}', "invalid_field"),
        ('{"action": "start", "params": {"x": "' + "y" * 9000 + '"}}', "params_too_large"),
        ("x" * 70_000, "frame_too_large"),
        ('{"action": "subscribe", "task_id": "../../etc"}', "invalid_field"),
        ('{"action": "cancel"}', "invalid_field"),
        (b"\x00\x01binary", "binary_not_supported"),
    ]
    for frame, code in bad:
        await client.ws.send(frame)
        answer = await client.recv(timeout=10)
        assert answer["type"] == "error" and answer["code"] == code, (frame[:40], answer)
        assert answer["detail"]
    task_id = await client.start(**FAST)
    assert (await client.until_terminal(task_id))["type"] == "complete"
    await client.close()


# -- cancel ----------------------------------------------------------------------


async def test_cancel_reaches_the_backend_and_every_watcher(stack: Stack) -> None:
    """Cancel stops the backend task and every watcher gets exactly one cancelled."""
    session = new_session(stack.url)
    first = await Client.connect(stack.url, session)
    second = await Client.connect(stack.url, session)
    task_id = await first.start(**SLOW)
    await second.send({"action": "subscribe", "task_id": task_id})
    await second.recv_type("snapshot")
    await first.recv_type("progress")
    await second.send({"action": "cancel", "task_id": task_id})
    a, b = await asyncio.gather(first.until_terminal(task_id), second.until_terminal(task_id))
    assert a["type"] == b["type"] == "cancelled" and a["seq"] == b["seq"]
    assert backend_state(stack.backend_url, backend_ref(stack, task_id))["state"] == "cancelled"
    await first.send({"action": "cancel", "task_id": task_id})
    again = await first.recv_type("error")
    assert again["code"] == "not_cancellable"
    await first.close()
    await second.close()


# -- failures and recovery ---------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty_backend() -> Iterator[BackendProcess]:
    backend = start_backend(allow_faults=True)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def fault_stack(
    faulty_backend: BackendProcess,
    tmp_path_factory: pytest.TempPathFactory,
    new_database: NewDatabase,
) -> Iterator[Stack]:
    """A stack with a fault-injecting backend, a 2 s failure budget and a 1 s sweep."""
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("faults"),
        backend_url=faulty_backend.url,
        database_url=new_database(),
        echo=ECHO,
        env={"PROGROCK_FAILURE_BUDGET": "2", "PROGROCK_SWEEP_INTERVAL": "1"},
    )
    stack.start(timeout=90)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("faults", "words"),
    [
        ({"status": 500}, "500"),
        ({"garbage": True}, "JSON"),
        ({"delay_s": 7.0}, "time"),
    ],
    ids=["http-500", "garbage", "timeout"],
)
async def test_an_unusable_backend_fails_the_task_with_a_clear_error(
    fault_stack: Stack, faulty_backend: BackendProcess, faults: dict[str, object], words: str
) -> None:
    """Polls that get 500s, garbage or no answer end in failed/backend_unreachable."""
    client = await Client.connect(fault_stack.url)
    task_id = await client.start(**SLOW)
    await client.recv_type("progress")
    faulty_backend.set_faults(routes=["status", "get"], **faults)  # type: ignore[arg-type]
    try:
        final = await client.until_terminal(task_id, timeout=40)
    finally:
        faulty_backend.clear_faults()
    assert final["type"] == "failed", final
    assert final["error"]["code"] == "backend_unreachable"
    assert words.lower() in final["error"]["detail"].lower(), final["error"]
    assert_well_ordered(client.of_task(task_id))
    await client.close()


async def test_a_backend_that_goes_away_fails_the_task(make_stack: MakeStack) -> None:
    """With the backend process gone, a running task fails with a clear error."""
    stack = make_stack(env={"PROGROCK_FAILURE_BUDGET": "2"})
    client = await Client.connect(stack.url)
    task_id = await client.start(**SLOW)
    await client.recv_type("progress")
    await asyncio.to_thread(stack.kill, "backend")
    final = await client.until_terminal(task_id, timeout=40)
    assert final["type"] == "failed" and final["error"]["code"] == "backend_unreachable"
    assert "connect" in final["error"]["detail"].lower(), final["error"]
    await client.close()


async def test_a_killed_worker_does_not_strand_tasks(fault_stack: Stack) -> None:
    """SIGKILL a worker mid-task: the sweep re-arms lost poll chains and all tasks complete."""
    clients = [await Client.connect(fault_stack.url) for _ in range(6)]
    task_ids = [await c.start(kind="rock", params={"interval_ms": 150}) for c in clients]
    await clients[0].recv_type("progress")
    await asyncio.to_thread(fault_stack.kill, "worker-1")
    try:
        finals = await asyncio.gather(
            *(c.until_terminal(t, timeout=60) for c, t in zip(clients, task_ids, strict=True))
        )
    finally:
        await asyncio.to_thread(fault_stack.restart, "worker-1")
    assert [f["type"] for f in finals] == ["complete"] * 6
    for client, task_id in zip(clients, task_ids, strict=True):
        assert_well_ordered(client.of_task(task_id))
        await client.close()


async def test_a_start_taken_by_a_killed_worker_is_forwarded_again(
    make_stack: MakeStack, faulty_backend: BackendProcess
) -> None:
    """SIGKILL the only worker while the backend creates the task: the start's watchdog
    forwards it again, and the restarted worker starts it (no failure, no lost client)."""
    stack = make_stack(
        backend_url=faulty_backend.url, workers=1, env={"PROGROCK_START_TIMEOUT": "2"}
    )
    client = await Client.connect(stack.url)
    faulty_backend.set_faults(delay_s=30.0, routes=["create"], count=1)
    try:
        await client.send({"action": "start", **FAST, "ref": "r1"})
        # The worker has written the row and now waits for the backend's create.
        deadline = asyncio.get_running_loop().time() + 30
        while not (queued := queued_task_ids(stack)):
            assert asyncio.get_running_loop().time() < deadline, "the start never reached a worker"
            await asyncio.sleep(0.05)
        [task_id] = queued
        await asyncio.to_thread(stack.kill, "worker-1")
    finally:
        faulty_backend.clear_faults()
    await asyncio.to_thread(stack.restart, "worker-1")
    final = await client.until_terminal(task_id, timeout=60)
    assert final["type"] == "complete", final
    types = [m["type"] for m in client.of_task(task_id)]
    assert types.count("started") == 1 and "progress" in types, types
    assert client.of_task(task_id)[0]["ref"] == "r1"
    assert_well_ordered(client.of_task(task_id))
    await client.close()


async def test_a_flushed_delay_set_does_not_strand_tasks(fault_stack: Stack) -> None:
    """Deleting every pending delayed message mid-task: the sweep re-arms and tasks complete."""
    clients = [await Client.connect(fault_stack.url) for _ in range(4)]
    task_ids = [await c.start(kind="rock", params={"interval_ms": 150}) for c in clients]
    await clients[0].recv_type("progress")
    r = redis.Redis.from_url(fault_stack.redis_url)
    keys = list(r.scan_iter("progrock:delay:*"))
    assert keys, "expected pending poll ticks in the delay set"
    r.delete(*keys)
    r.close()
    finals = await asyncio.gather(
        *(c.until_terminal(t, timeout=60) for c, t in zip(clients, task_ids, strict=True))
    )
    assert [f["type"] for f in finals] == ["complete"] * 4
    for client in clients:
        await client.close()


async def test_the_per_owner_limit_refuses_extra_tasks(make_stack: MakeStack) -> None:
    """Past MAX_RUNNING_PER_OWNER running tasks, start gets too_many_tasks with its ref."""
    stack = make_stack(env={"PROGROCK_MAX_RUNNING_PER_OWNER": "2"}, workers=1)
    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    await client.start(**SLOW)
    await client.start(**SLOW)
    await client.send({"action": "start", "ref": "third", **SLOW})
    answer = await client.recv_type("error", "started")
    assert answer["type"] == "error" and answer["code"] == "too_many_tasks", answer
    assert answer["ref"] == "third"
    await client.close()
