"""The terminal client's pure task state machine, exit codes and reconnect backoff."""

from __future__ import annotations

import random
from typing import Any

import pytest

from progrock.client.state import (
    EXIT_CODES,
    Outcome,
    Step,
    Tracker,
    backoff_delays,
    exit_code,
    outcome_of_status,
)

TASK = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
OTHER = "00000000-0000-4000-8000-000000000000"


def started(seq: int = 1, ref: str | None = "r1", task_id: str = TASK) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "started",
        "task_id": task_id,
        "seq": seq,
        "kind": "rock",
        "status": "running",
        "progress": 0,
    }
    if ref is not None:
        msg["ref"] = ref
    return msg


def progress(seq: int, value: float, **extra: Any) -> dict[str, Any]:
    msg = {"type": "progress", "task_id": TASK, "seq": seq, "progress": value}
    msg.update({"message": None, "eta_s": None, "rate": None, **extra})
    return msg


def snapshot(seq: int, status: str, value: float, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "snapshot",
        "task_id": TASK,
        "seq": seq,
        "status": status,
        "kind": "rock",
        "progress": value,
        "message": None,
        "eta_s": None,
        "rate": None,
        "result": None,
        "error": None,
        "created_at": None,
        "started_at": None,
        "finished_at": None,
    }
    msg.update(extra)
    return msg


def test_exit_codes_follow_the_documented_table() -> None:
    """0 success, 1 failed, 2 cancelled, 3 problem, 130 interrupted; every outcome has one."""
    assert [exit_code(o) for o in Outcome] == [0, 1, 2, 3, 130]
    assert set(EXIT_CODES) == set(Outcome)


def test_terminal_statuses_map_to_outcomes() -> None:
    """succeeded/failed/cancelled are outcomes; live statuses are not."""
    assert outcome_of_status("succeeded") is Outcome.SUCCEEDED
    assert outcome_of_status("failed") is Outcome.FAILED
    assert outcome_of_status("cancelled") is Outcome.CANCELLED
    assert outcome_of_status("running") is None


def test_run_learns_the_task_id_from_the_started_message_with_its_ref() -> None:
    """The greeting is ignored; ``started`` echoing our ref announces the task."""
    tracker = Tracker(ref="r1")
    assert tracker.handle({"accept": True}, 0.0) == Step()
    step = tracker.handle(started(), 0.0)
    assert step.started and step.changed
    assert tracker.task_id == TASK
    assert tracker.view.kind == "rock"
    assert tracker.view.status == "running"


def test_started_with_another_ref_is_not_ours() -> None:
    """A ``started`` for someone else's ref does not adopt the task."""
    tracker = Tracker(ref="r1")
    assert tracker.handle(started(ref="r2"), 0.0) == Step()
    assert tracker.task_id is None


def test_progress_updates_the_view_and_ignores_stale_seq() -> None:
    """Newer messages update progress, message, rate and ETA; an older seq is ignored."""
    tracker = Tracker(task_id=TASK)
    step = tracker.handle(progress(3, 30, message="hashing", rate=2.0, eta_s=35), 1.0)
    assert step.changed
    view = tracker.view
    assert (view.progress, view.message, view.rate, view.eta_s, view.seq) == (
        30,
        "hashing",
        2.0,
        35,
        3,
    )
    assert tracker.handle(progress(2, 20), 1.5) == Step()
    assert view.progress == 30
    assert tracker.handle(progress(5, 50), 2.0).changed  # a gap is fine: full state each time
    assert view.progress == 50


def test_messages_of_other_tasks_are_ignored() -> None:
    """Only the watched task's messages change the view."""
    tracker = Tracker(task_id=TASK)
    msg = progress(2, 40)
    msg["task_id"] = OTHER
    assert tracker.handle(msg, 0.0) == Step()
    assert tracker.view.progress == 0


@pytest.mark.parametrize(
    ("msg", "outcome"),
    [
        ({"type": "complete", "complete": True, "progress": 100, "result": {"n": 1}}, "SUCCEEDED"),
        (
            {"type": "failed", "progress": 30, "error": {"code": "backend_failed", "detail": "x"}},
            "FAILED",
        ),
        ({"type": "cancelled", "progress": 12}, "CANCELLED"),
    ],
)
def test_terminal_messages_end_the_watch(msg: dict[str, Any], outcome: str) -> None:
    """complete, failed and cancelled each give their outcome; nothing counts after them."""
    tracker = Tracker(task_id=TASK)
    tracker.handle(progress(2, 10), 0.0)
    step = tracker.handle({**msg, "task_id": TASK, "seq": 3}, 1.0)
    assert step.outcome is Outcome[outcome]
    assert tracker.outcome is Outcome[outcome]
    assert tracker.handle(progress(4, 99), 2.0) == Step()


def test_failed_message_keeps_the_error_code_and_detail() -> None:
    """The failure's code and detail are kept for the final line."""
    tracker = Tracker(task_id=TASK)
    error = {"code": "backend_failed", "detail": "boom at 30"}
    tracker.handle({"type": "failed", "task_id": TASK, "seq": 5, "progress": 30, "error": error}, 0)
    assert (tracker.view.error_code, tracker.view.error_detail) == ("backend_failed", "boom at 30")
    assert tracker.view.progress == 30


def test_snapshot_of_a_finished_task_waits_for_its_terminal_message() -> None:
    """A terminal snapshot does not end the watch; the terminal message of equal seq does."""
    tracker = Tracker(task_id=TASK)
    step = tracker.handle(snapshot(9, "succeeded", 100, result=[1]), 0.0)
    assert step.changed and step.outcome is None
    assert tracker.awaiting_terminal
    done = tracker.handle(
        {"type": "complete", "task_id": TASK, "seq": 9, "complete": True, "progress": 100}, 0.1
    )
    assert done.outcome is Outcome.SUCCEEDED
    assert not tracker.awaiting_terminal


def test_a_terminal_snapshot_can_end_the_watch_if_nothing_follows() -> None:
    """finish_from_snapshot gives the snapshot's outcome when the terminal message is late."""
    tracker = Tracker(task_id=TASK)
    tracker.handle(snapshot(4, "cancelled", 40), 0.0)
    assert tracker.finish_from_snapshot() is Outcome.CANCELLED
    live = Tracker(task_id=TASK)
    live.handle(snapshot(4, "running", 40), 0.0)
    assert live.finish_from_snapshot() is None


def test_snapshot_replaces_the_view_after_a_reconnect() -> None:
    """A snapshot resets seq and state, so later messages compare against it."""
    tracker = Tracker(task_id=TASK)
    tracker.handle(progress(3, 30, message="old"), 0.0)
    tracker.handle(snapshot(8, "running", 80, message="new"), 1.0)
    assert (tracker.view.seq, tracker.view.progress, tracker.view.message) == (8, 80, "new")
    assert tracker.handle(progress(8, 80), 1.1) == Step()
    assert tracker.handle(progress(9, 90), 1.2).changed


def test_error_frames_are_problems_with_code_and_detail() -> None:
    """An error frame (forbidden, unknown_kind, ...) stops the watch naming code and detail."""
    tracker = Tracker(task_id=TASK)
    step = tracker.handle(
        {"type": "error", "code": "forbidden", "detail": "no such task", "task_id": TASK}, 0.0
    )
    assert step.problem == "forbidden: no such task"


def test_errors_about_other_requests_are_ignored() -> None:
    """An error naming another task or another ref is not ours."""
    tracker = Tracker(ref="r1")
    other_ref = {"type": "error", "code": "too_many_tasks", "detail": "x", "ref": "r2"}
    assert tracker.handle(other_ref, 0.0) == Step()
    mine = {"type": "error", "code": "unknown_kind", "detail": "got 'x'", "ref": "r1"}
    assert tracker.handle(mine, 0.0).problem == "unknown_kind: got 'x'"


def test_not_cancellable_after_our_cancel_is_only_a_note() -> None:
    """When the task ended before our cancel, the error is a note and the watch goes on."""
    tracker = Tracker(task_id=TASK)
    tracker.cancel_requested = True
    err = {"type": "error", "code": "not_cancellable", "detail": "over", "task_id": TASK}
    step = tracker.handle(err, 0.0)
    assert step.problem is None and step.note is not None and "over" in step.note


@pytest.mark.parametrize(
    "msg",
    [
        ["not", "an", "object"],
        {"type": "progress", "task_id": TASK, "seq": 2, "progress": "half"},
        {"type": "failed", "task_id": TASK, "seq": 2, "progress": 3, "error": "boom"},
    ],
)
def test_malformed_server_messages_are_problems_quoting_them(msg: object) -> None:
    """A message breaking the protocol is a problem whose text quotes the bad value."""
    step = Tracker(task_id=TASK).handle(msg, 0.0)
    assert step.problem is not None
    assert "expected" in step.problem and "got" in step.problem


def test_unknown_types_are_ignored_for_forward_compatibility() -> None:
    """A message type newer than this client changes nothing."""
    tracker = Tracker(task_id=TASK)
    assert tracker.handle({"type": "hint", "task_id": TASK, "seq": 2}, 0.0) == Step()


def test_rate_falls_back_to_an_estimate_from_observed_progress() -> None:
    """Without a server rate, the rate is progress gained per second since the first sample."""
    tracker = Tracker(task_id=TASK)
    tracker.handle(progress(2, 10), 100.0)
    assert tracker.estimated_rate(100.5) is None  # too early to tell
    tracker.handle(progress(3, 30), 104.0)
    assert tracker.estimated_rate(104.0) == pytest.approx(5.0)
    tracker.handle(progress(4, 40, rate=1.5), 105.0)
    assert tracker.estimated_rate(105.0) == 1.5


def test_backoff_is_capped_jittered_and_finite() -> None:
    """Each delay lies in [d/2, d] for d = min(cap, base * 2**n); there are exactly N."""
    delays = list(backoff_delays(6, base=0.5, cap=3.0, rng=random.Random(7)))
    assert len(delays) == 6
    for n, delay in enumerate(delays):
        ceiling = min(3.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert list(backoff_delays(0)) == []
    with pytest.raises(ValueError, match="got -1"):
        list(backoff_delays(-1))


def test_backoff_after_a_service_restart_starts_at_once() -> None:
    """After a 1012 the first delay is in [0, base/2] (full jitter); the rest as usual."""
    firsts = [
        next(backoff_delays(3, base=0.5, rng=random.Random(seed), restarting=True))
        for seed in range(50)
    ]
    assert all(0 <= d <= 0.25 for d in firsts) and min(firsts) < 0.05, firsts
    later = list(backoff_delays(3, base=0.5, rng=random.Random(1), restarting=True))[1:]
    assert 0.5 <= later[0] <= 1.0 and 1.0 <= later[1] <= 2.0, later


def test_run_adopts_a_task_rejected_before_it_started() -> None:
    """A ``failed`` (seq 1) without ``started`` names the run's task and ends it."""
    tracker = Tracker(ref="r1")
    error = {"code": "backend_rejected", "detail": "rock param 'step' must be > 0, got -1"}
    msg = {"type": "failed", "task_id": TASK, "seq": 1, "progress": 0, "error": error}
    step = tracker.handle(msg, 0.0)
    assert step.started and step.outcome is Outcome.FAILED
    assert tracker.task_id == TASK
    assert tracker.view.error_code == "backend_rejected"


def test_run_does_not_adopt_a_task_message_with_another_ref() -> None:
    """A task message echoing a different ref is not the run's task."""
    tracker = Tracker(ref="r1")
    msg = {"type": "progress", "task_id": TASK, "seq": 2, "progress": 5, "ref": "r2"}
    assert tracker.handle(msg, 0.0) == Step()
    assert tracker.task_id is None
