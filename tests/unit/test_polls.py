"""The pure parts of a poll: what a backend status announces for a task."""

from __future__ import annotations

from progrock.polls import announce_start, observe
from progrock.protocol import Status
from progrock.services.base import ServiceStatus

TASK = "0b7f2a5e-3c1d-4e8f-9a6b-1c2d3e4f5a6b"


def running(progress: float, message: str = "") -> ServiceStatus:
    return ServiceStatus(ref="b-1", state="running", progress=progress, message=message)


def test_the_first_poll_announces_started_with_the_backends_progress() -> None:
    fields = {"status": "running", "progress": "0", "unann": "rock", "fails": "2"}
    change, book = observe(TASK, fields, running(6, "warming up"), now=100.0)
    assert change is not None
    assert change.message["type"] == "started" and change.message["kind"] == "rock"
    assert change.progress == 6 and change.status == Status.RUNNING and not change.quiet
    # Announced once; the backend's message is left for the next update to carry.
    assert book == {"fails": "", "fail_since": "", "unann": ""}
    assert "message" not in change.fields


def test_later_polls_announce_progress_and_nothing_unchanged() -> None:
    fields = {"status": "running", "progress": "3", "unann": "", "rp": "3", "rt": "99.8"}
    change, _ = observe(TASK, fields, running(6), now=100.0)
    assert change is not None and change.message["type"] == "progress" and change.progress == 6
    assert observe(TASK, {**fields, "progress": "6"}, running(6), now=100.2)[0] is None


def test_a_start_announced_before_an_end_keeps_the_stored_progress() -> None:
    change = announce_start(TASK, {"progress": "9", "unann": "rock"}, None)
    assert change.progress == 9 and change.message["type"] == "started"
    # A backend reporting less than was stored never lowers it.
    assert announce_start(TASK, {"progress": "9", "unann": "rock"}, 4).progress == 9
