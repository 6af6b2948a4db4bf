"""Push tasks' producers (progrock.push): coalescing, ends, cancel, keep-alive, PUSH_TIMEOUT,
bad input and Redis outages, on a real Redis and database."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings

import progrock
from progrock.delay import DelayStore
from progrock.exceptions import ProgRockError, RedisUnavailable
from progrock.local.redis_server import RedisServer
from progrock.models import Task
from progrock.push import Reporter
from progrock.services.http import HttpTaskService
from progrock.state.live import TaskStore
from progrock.state.sync_store import store_for_process
from progrock.tuning import QUEUED_PUSH_TIMEOUT
from progrock.worker.cancel import cancel
from progrock.worker.context import Cadence, Worker
from progrock.worker.sweep import sweep_push

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

CADENCE = 0.2  # POLL_INTERVAL in these tests


@pytest.fixture
def wired(redis_url: str) -> Iterator[str]:
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    with override_settings(
        PROGROCK={
            "REDIS_URL": redis_url,
            "MAX_RUNNING_PER_OWNER": 1,
            "POLL_INTERVAL": CADENCE,
            "PUSH_TIMEOUT": 60,
        },
        CHANNEL_LAYERS=layers,
    ):
        yield redis_url


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reporter(wired: str, clock: Clock) -> Reporter:
    """A reporter on the private Redis whose cadence runs on the test's clock."""
    return Reporter(lambda: store_for_process(wired), clock=clock)


class Listener:
    """The fan-out messages of one task, from a real pub/sub subscription."""

    def __init__(self, redis_url: str, task_id: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(f"progrock:u:{task_id}")
        self.pubsub.get_message(timeout=5)  # the subscribe confirmation

    def next(self, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=deadline - time.monotonic())
            if message is not None and message["type"] == "message":
                return dict(json.loads(message["data"].decode().split(" ", 2)[2]))
        raise AssertionError("no message arrived")

    def none_within(self, seconds: float) -> bool:
        message = self.pubsub.get_message(timeout=seconds)
        return message is None

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def listen(wired: str) -> Iterator[Callable[[str], Listener]]:
    made: list[Listener] = []

    def make(task_id: str) -> Listener:
        made.append(Listener(wired, task_id))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def live(redis_url: str, task_id: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return dict(client.hgetall(f"progrock:t:{task_id}"))
    finally:
        client.close()


def as_a_worker(redis_url: str, job: Callable[[Worker], Any]) -> Any:
    """Run ``job`` with a worker's collaborators on the private Redis (as runprogrock would)."""

    async def run() -> Any:
        client = aioredis.Redis.from_url(redis_url)
        delay = DelayStore.from_url(redis_url)
        service = HttpTaskService("http://127.0.0.1:9")  # push tasks never reach a backend
        try:
            return await job(Worker(service, TaskStore(client), delay, Cadence.from_settings()))
        finally:
            await service.aclose()
            await delay.aclose()
            await client.aclose()

    return async_to_sync(run)()


def cancel_like_a_user(redis_url: str, task_id: str) -> None:
    """The worker's handling of a socket's (or the admin's) cancel of the task."""
    message = {"type": "progrock.cancel", "task_id": task_id, "reply_channel": None}
    as_a_worker(redis_url, lambda worker: cancel(worker, message))


def sweep_at(redis_url: str, now: float) -> list[str]:
    """The sweep's push-task check, as a worker's sweep at ``now`` runs it."""
    return list(as_a_worker(redis_url, lambda worker: sweep_push(worker.store, now)))


# -- coalescing ---------------------------------------------------------------------


def test_reports_within_the_cadence_are_held_and_the_newest_gets_through(
    reporter: Reporter, clock: Clock, listen: Callable[[str], Listener]
) -> None:
    """Of reports closer than POLL_INTERVAL only the newest is published, by the next call."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    assert reporter.report(task_id, 10, "a") == 2
    assert reporter.report(task_id, 20, "b") == 0  # held
    assert reporter.report(task_id, 30, "c") == 0  # replaces 20
    clock.now += CADENCE
    # Now due, the held 30 may go out first from the flusher thread (then 40 is held
    # in its turn, and flushed); either way 20 never does, and 40 gets through last.
    reporter.report(task_id, 40, "d")
    reporter.flush()
    seen = [(m["progress"], m["message"]) for m in (listener.next(), listener.next())]
    while seen[-1] != (40, "d") and len(seen) < 3:
        message = listener.next()
        seen.append((message["progress"], message["message"]))
    assert seen in ([(10, "a"), (40, "d")], [(10, "a"), (30, "c"), (40, "d")])


def test_a_held_value_is_published_without_another_call(
    reporter: Reporter, clock: Clock, listen: Callable[[str], Listener]
) -> None:
    """A producer that goes quiet after a held report still shows its newest value."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    reporter.report(task_id, 10)
    assert reporter.report(task_id, 55, "last words") == 0
    clock.now += CADENCE  # the flusher publishes it once the cadence allows
    assert listener.next()["progress"] == 10
    later = listener.next()
    assert (later["progress"], later["message"], later["seq"]) == (55, "last words", 3)


def test_an_end_never_waits_and_keeps_the_held_progress(
    reporter: Reporter, listen: Callable[[str], Listener]
) -> None:
    """A failure right after a held report is published at once, with the held progress."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    reporter.report(task_id, 10)
    reporter.report(task_id, 35)  # held
    assert reporter.report(task_id, status="failed", error="disk full") == 3
    assert listener.next()["progress"] == 10
    end = listener.next()
    assert end["type"] == "failed" and end["progress"] == 35
    assert end["error"] == {"code": "task_failed", "detail": "disk full"}
    assert listener.none_within(CADENCE * 2)  # the held 35 is not published after the end
    row = Task.objects.get(pk=task_id)
    assert (row.status, row.progress) == ("failed", 35)


def test_complete_delivers_the_result_and_frees_the_slot(
    reporter: Reporter, listen: Callable[[str], Listener]
) -> None:
    """status='complete' ends the task with its result; the owner may start another."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    with pytest.raises(progrock.TooManyTasks):
        progrock.start_task("import", owner="user:1", push=True)
    assert reporter.report(task_id, status="complete", result={"rows": 3}) == 2
    assert listener.next() == {
        "type": "complete",
        "task_id": task_id,
        "seq": 2,
        "complete": True,
        "progress": 100,
        "result": {"rows": 3},
    }
    progrock.start_task("import", owner="user:1", push=True)


def test_push_reports_carry_rate_and_eta(wired: str, clock: Clock) -> None:
    """Two reports 10 s apart, 10 points apart: 1 %/s and 80 s to go, as a poll computes."""
    wall = Clock()
    reporter = Reporter(lambda: store_for_process(wired), clock=clock, wall=wall)
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = Listener(wired, task_id)
    try:
        reporter.report(task_id, 10)
        clock.now += CADENCE
        wall.now += 10
        reporter.report(task_id, 20)
        listener.next()
        second = listener.next()
    finally:
        listener.close()
    assert (second["rate"], second["eta_s"]) == (1.0, 80.0)
    fields = live(wired, task_id)
    assert (float(fields["rate"]), float(fields["eta_s"])) == (1.0, 80.0)


def test_progress_reaches_the_row_at_most_every_db_interval(
    reporter: Reporter, clock: Clock
) -> None:
    """The first report is copied to the row; the next ones within DB_PROGRESS_INTERVAL not."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    reporter.report(task_id, 10, "first")
    clock.now += CADENCE
    assert reporter.report(task_id, 20, "second") == 3
    row = Task.objects.get(pk=task_id)
    assert (row.progress, row.message, row.seq) == (10, "first", 2)


# -- cancel --------------------------------------------------------------------------


def test_a_cancel_reaches_the_producer(reporter: Reporter, clock: Clock, wired: str) -> None:
    """After a user's cancel, is_cancelled says so and every report raises Cancelled."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    reporter.report(task_id, 10)
    assert reporter.is_cancelled(task_id) is False
    cancel_like_a_user(wired, task_id)
    assert reporter.is_cancelled(task_id) is True
    with pytest.raises(progrock.Cancelled):
        reporter.report(task_id, 20)  # held by the cadence, yet refused
    clock.now += CADENCE
    with pytest.raises(progrock.Cancelled):
        reporter.report(task_id, 30)
    with pytest.raises(progrock.Cancelled):
        reporter.report(task_id, status="complete", result=1)
    assert Task.objects.get(pk=task_id).status == "cancelled"


def test_a_report_finds_out_about_a_cancel_by_itself(wired: str) -> None:
    """A producer that never asked is_cancelled learns of the cancel from its next report."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    progrock.report_progress(task_id, 10)
    cancel_like_a_user(wired, task_id)
    with pytest.raises(progrock.Cancelled):
        Reporter(lambda: store_for_process(wired)).report(task_id, 20)
    assert progrock.is_cancelled(task_id)


def test_a_producer_mid_task_learns_of_the_cancel_from_its_next_report(
    reporter: Reporter, clock: Clock, wired: str
) -> None:
    """A producer already reporting (no is_cancelled asked) gets Cancelled from its next
    published report, and from every one after it, even those the cadence would hold."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    reporter.report(task_id, 10)
    cancel_like_a_user(wired, task_id)
    clock.now += CADENCE
    with pytest.raises(progrock.Cancelled):
        reporter.report(task_id, 20)
    with pytest.raises(progrock.Cancelled):
        reporter.report(task_id, 30)


# -- keep-alive and PUSH_TIMEOUT ------------------------------------------------------


def test_a_silent_push_task_fails_as_lost_and_frees_its_slot(
    wired: str, listen: Callable[[str], Listener]
) -> None:
    """No word for PUSH_TIMEOUT: the sweep fails the task 'lost'; its owner may start again."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    progrock.report_progress(task_id, 25)
    assert sweep_at(wired, time.time() + 30) == []  # within PUSH_TIMEOUT: left alone
    assert sweep_at(wired, time.time() + 61) == [task_id]
    listener.next()  # the progress
    end = listener.next()
    assert end["type"] == "failed" and end["error"]["code"] == "lost" and end["progress"] == 25
    assert Task.objects.get(pk=task_id).status == "failed"
    progrock.start_task("import", owner="user:1", push=True)  # the slot is free


def test_keep_alive_refreshes_the_deadline_without_publishing(
    wired: str, listen: Callable[[str], Listener]
) -> None:
    """A keep-alive publishes nothing, and moves the deadline the sweep checks."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    now = time.time()
    redis.Redis.from_url(wired).hset(f"progrock:t:{task_id}", "hb", repr(now - 50))
    progrock.keep_alive(task_id)
    assert listener.none_within(0.1)
    assert sweep_at(wired, now + 30) == []  # 80 s after the old deadline's start
    assert sweep_at(wired, now + 61) == [task_id]


def test_a_push_task_that_never_reached_redis_fails_as_lost(wired: str) -> None:
    """A running push row with no live state and seq 0 (Redis was down) fails after PUSH_TIMEOUT."""
    started = datetime.now(UTC) - timedelta(seconds=61)
    task = Task.objects.create(
        owner="user:1", kind="import", push=True, status="running", started_at=started
    )
    assert sweep_at(wired, time.time()) == [str(task.pk)]
    task.refresh_from_db()
    assert task.status == "failed" and task.error["code"] == "lost"


def test_live_state_lost_while_the_producer_runs_gets_a_new_deadline(wired: str) -> None:
    """Redis lost a reporting task's state: the sweep rebuilds it instead of failing it."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    redis.Redis.from_url(wired).delete(f"progrock:t:{task_id}")
    assert sweep_at(wired, time.time() + 61) == []
    assert live(wired, task_id)["status"] == "running"
    assert progrock.report_progress(task_id, 40) > 1000  # seq continues past the rebuilt margin


# -- queued push tasks (a task queue's job) ---------------------------------------------


def start_queued(owner: str = "user:1") -> str:
    """A push task that waits in ``queued`` for its job to begin (as progrock.queues starts)."""
    return progrock.start_task("import", owner=owner, push=True, queued=True)


def test_a_queued_push_task_waits_beyond_push_timeout_then_begins_once(
    reporter: Reporter, wired: str, listen: Callable[[str], Listener]
) -> None:
    """Queued: nothing published, no PUSH_TIMEOUT; begin moves it to running with one
    `started` (seq 1) and a second begin (a Celery retry) does nothing; PUSH_TIMEOUT
    then runs from the begin."""
    task_id = start_queued()
    listener = listen(task_id)
    assert live(wired, task_id)["status"] == "queued"
    assert Task.objects.get(pk=task_id).status == "queued"
    assert sweep_at(wired, time.time() + 61 * 10) == []  # ten PUSH_TIMEOUTs in its queue
    assert listener.none_within(0.05)
    assert reporter.begin(task_id) is True
    started = listener.next()
    assert (started["type"], started["status"], started["seq"]) == ("started", "running", 1)
    assert reporter.begin(task_id) is False  # the job's retry: no second `started`
    assert Reporter(lambda: store_for_process(wired)).begin(task_id) is False  # another process
    assert listener.none_within(0.1)
    state, row = live(wired, task_id), Task.objects.get(pk=task_id)
    assert (state["status"], state["seq"], row.status, row.seq) == ("running", "1", "running", 1)
    assert row.started_at is not None
    assert reporter.report(task_id, 10) == 2
    assert sweep_at(wired, time.time() + 30) == []
    assert sweep_at(wired, time.time() + 61) == [task_id]


def test_the_first_report_of_a_queued_push_task_announces_started_first(
    reporter: Reporter, listen: Callable[[str], Listener]
) -> None:
    """A producer that reports without begin: `started`, then its progress, then its end."""
    task_id = start_queued()
    listener = listen(task_id)
    assert reporter.report(task_id, 20, "first") == 2
    assert [m["type"] for m in (listener.next(), listener.next())] == ["started", "progress"]
    other = start_queued("user:2")
    listener = listen(other)
    assert reporter.report(other, status="complete", result=1) == 2  # it ran, so it may succeed
    assert [m["type"] for m in (listener.next(), listener.next())] == ["started", "complete"]
    assert Task.objects.get(pk=other).status == "succeeded"


def test_a_queued_push_task_may_fail_or_be_cancelled_without_starting(
    reporter: Reporter, wired: str, listen: Callable[[str], Listener]
) -> None:
    """A job its queue refused fails at once; a cancelled one never begins (Cancelled)."""
    refused = start_queued()
    listener = listen(refused)
    reporter.report(refused, status="failed", code="not_started", error="broker down")
    assert listener.next()["type"] == "failed"
    assert Task.objects.get(pk=refused).started_at is None
    cancelled = start_queued()
    listener = listen(cancelled)
    cancel_like_a_user(wired, cancelled)
    assert listener.next()["type"] == "cancelled"
    with pytest.raises(progrock.Cancelled):
        Reporter(lambda: store_for_process(wired)).begin(cancelled)
    assert listener.none_within(0.1)
    assert Task.objects.get(pk=cancelled).status == "cancelled"


def test_a_queued_push_task_whose_job_never_begins_fails_lost(
    wired: str, listen: Callable[[str], Listener]
) -> None:
    """Queued for longer than QUEUED_PUSH_TIMEOUT: the sweep fails it `lost`, never started."""
    task_id = start_queued()
    listener = listen(task_id)
    assert sweep_at(wired, time.time() + QUEUED_PUSH_TIMEOUT - 60) == []
    assert sweep_at(wired, time.time() + QUEUED_PUSH_TIMEOUT + 1) == [task_id]
    end = listener.next()
    assert end["type"] == "failed" and end["error"]["code"] == "lost", end
    assert "never started" in end["error"]["detail"]
    assert Task.objects.get(pk=task_id).status == "failed"
    start_queued()  # its slot is free


def test_queued_is_for_push_tasks_only(wired: str) -> None:
    """start_task(queued=True) without push=True is refused, naming both."""
    with pytest.raises(ProgRockError, match="queued=True is for push tasks"):
        progrock.start_task("import", owner="user:1", queued=True)


# -- bad input and outages ----------------------------------------------------------


@pytest.mark.parametrize("bad", [120, -1, "50", True, float("nan"), float("inf")])
def test_bad_progress_is_refused_and_nothing_is_published(
    wired: str, bad: object, listen: Callable[[str], Listener]
) -> None:
    """Progress outside 0-100 or not a number: ValueError naming it, nothing published."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    with pytest.raises(ValueError, match=f"got {bad!r}"):
        progrock.report_progress(task_id, bad)  # type: ignore[arg-type]
    assert listener.none_within(0.1)
    assert live(wired, task_id)["seq"] == "1"


def test_a_result_that_is_not_json_fails_the_task_bad_result(
    wired: str, listen: Callable[[str], Listener]
) -> None:
    """complete with an unserialisable result: the call raises and the task fails bad_result."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    listener = listen(task_id)
    with pytest.raises(ValueError, match="bad_result"):
        progrock.report_progress(task_id, status="complete", result={"when": object()})
    end = listener.next()
    assert end["type"] == "failed" and end["error"]["code"] == "bad_result"
    assert Task.objects.get(pk=task_id).status == "failed"


def test_unknown_tasks_and_bad_statuses_are_refused(wired: str) -> None:
    """An unknown id is TaskNotFound; an unknown status, failure code, or a result or
    error with the wrong status a ValueError."""
    with pytest.raises(progrock.TaskNotFound):
        progrock.report_progress(str(uuid.uuid4()), 10)
    with pytest.raises(progrock.TaskNotFound):
        progrock.report_progress("not-a-uuid", 10)
    task_id = progrock.start_task("import", owner="user:1", push=True)
    with pytest.raises(ValueError, match="'done'"):
        progrock.report_progress(task_id, status="done")
    with pytest.raises(ValueError, match="'oops'"):
        progrock.report_progress(task_id, status="failed", code="oops")
    with pytest.raises(ValueError, match="result is for status='complete' only"):
        progrock.report_progress(task_id, 50, result={"rows": 1})
    with pytest.raises(ValueError, match="error is for status='failed' only"):
        progrock.report_progress(task_id, status="cancelled", error="why")
    assert live(wired, task_id)["seq"] == "1"  # nothing was published


@pytest.fixture
def doomed_redis(wired: str) -> Iterator[RedisServer]:
    """A private Redis of its own, for a test to stop."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_a_push_start_that_meets_a_redis_outage_leaves_no_row(
    doomed_redis: RedisServer,
) -> None:
    """start_task(push=True) with Redis stopped raises a clear error and keeps no running row."""
    with override_settings(PROGROCK={"REDIS_URL": doomed_redis.url}):
        doomed_redis.stop()
        with pytest.raises(RedisUnavailable, match="could not start push task"):
            progrock.start_task("import", owner="user:1", push=True)
    assert not Task.objects.exists()


def test_a_report_to_a_stopped_redis_raises_a_clear_error(
    doomed_redis: RedisServer,
) -> None:
    """The producer gets RedisUnavailable, not a hang, when Redis stops mid-task."""
    with override_settings(PROGROCK={"REDIS_URL": doomed_redis.url}):
        task_id = progrock.start_task("import", owner="user:1", push=True)
        reporter = Reporter(lambda: store_for_process(doomed_redis.url))
        reporter.report(task_id, 10)
        doomed_redis.stop()
        with pytest.raises(RedisUnavailable, match="did not answer"):
            Reporter(lambda: store_for_process(doomed_redis.url)).report(task_id, 20)


def _report_in_child(task_id: str, parent_store: int, out: Any) -> None:
    from progrock import push
    from progrock.conf import progrock_settings

    push.DB_PROGRESS_INTERVAL = float("inf")  # type: ignore[misc]  # the parent's DB socket
    store = store_for_process(progrock_settings.REDIS_URL)
    out.put((id(store) != parent_store, progrock.report_progress(task_id, 50)))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_producer_reports_over_its_own_connection(wired: str) -> None:
    """A child forked after its parent reported uses a new store and its reports arrive."""
    task_id = progrock.start_task("import", owner="user:1", push=True)
    progrock.report_progress(task_id, 10)
    parent_store = id(store_for_process(wired))
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_report_in_child, args=(task_id, parent_store, out))
    child.start()
    new_store, seq = out.get(timeout=30)
    child.join(30)
    assert new_store and seq == 3
    assert live(wired, task_id)["progress"] == "50"


async def test_the_async_twins_report_keep_alive_and_answer(wired: str) -> None:
    """areport_progress, akeep_alive and ais_cancelled work from a running event loop."""
    # A cadence no loaded machine overruns between two calls: the second one is held.
    slow = {**settings.PROGROCK, "POLL_INTERVAL": 60.0, "PUSH_TIMEOUT": 600}
    with override_settings(PROGROCK=slow):
        task_id = await progrock.astart_task("import", owner="user:1", push=True)
        assert await progrock.areport_progress(task_id, 10, "a") == 2
        assert await progrock.areport_progress(task_id, 20, "b") == 0  # held: no thread hop
        await progrock.akeep_alive(task_id)
        assert await progrock.ais_cancelled(task_id) is False
        assert await progrock.areport_progress(task_id, status="complete", result=[1]) == 3
