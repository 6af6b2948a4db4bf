"""Reading a task's live-state hash through one typed record (progrock.state.live.LiveState)."""

from __future__ import annotations

import logging

import pytest

from progrock.protocol import Status
from progrock.state.live import LiveState, encode_fields, view_from_hash
from progrock.state.scripts import POLL_FIELDS

FULL = {
    "status": "running",
    "owner": "user:1",
    "ref": "b-1",
    "push": "0",
    "progress": "42.5",
    "seq": "7",
    "message": "4 of 10",
    "rp": "40.0",
    "rt": "1700000000.5",
    "rate": "1.25",
    "dbt": "1699999990.0",
    "fails": "2",
    "fail_since": "1699999999.0",
    "nd": "1700000000200.0",
    "lp": "1700000000.1",
}


def test_every_field_is_parsed_once_into_a_named_attribute() -> None:
    """Each two-letter field has a name and a type: no reader parses strings."""
    state = LiveState.from_hash(FULL)
    assert state == LiveState(
        status=Status.RUNNING,
        owner="user:1",
        ref="b-1",
        push=False,
        progress=42.5,
        seq=7,
        message="4 of 10",
        rate_progress=40.0,
        rate_time=1700000000.5,
        rate=1.25,
        db_written=1699999990.0,
        fails=2,
        fail_since=1699999999.0,
        next_due=1700000000200.0,
        last_poll=1700000000.1,
    )


def test_the_claim_reply_reads_the_same_as_the_hash() -> None:
    """The claim script's reply (POLL_FIELDS' values as bytes, in order) gives the same record."""
    values = [FULL[name].encode() for name in POLL_FIELDS]
    state = LiveState.from_values(values, next_due=1700000000200.0, last_poll=1700000000.1)
    assert state == LiveState.from_hash(FULL)


def test_absent_and_cleared_fields_take_their_defaults() -> None:
    """A fresh state (no rate yet, no failures; cleared fields are empty strings)."""
    state = LiveState.from_hash({"status": "queued", "owner": "u", "fails": "", "fail_since": ""})
    assert state is not None
    assert (state.status, state.ref, state.push, state.progress, state.seq) == (
        Status.QUEUED,
        "",
        False,
        0.0,
        0,
    )
    assert (state.rate_progress, state.rate_time, state.rate, state.db_written) == (
        0.0,
        None,
        None,
        0.0,
    )
    assert (state.fails, state.fail_since, state.next_due, state.last_poll) == (0, None, None, None)
    assert LiveState.from_hash({**FULL, "push": "1"}).push is True  # type: ignore[union-attr]


def test_no_status_means_no_live_state() -> None:
    """A hash without status (lost, or only bookkeeping left) reads as none: rebuild it."""
    assert LiveState.from_hash({}) is None
    assert LiveState.from_values([None] * len(POLL_FIELDS)) is None


def test_an_unknown_status_reads_as_no_live_state(caplog: pytest.LogCaptureFixture) -> None:
    """A status that is none of the protocol's is logged, and the state rebuilt from its row."""
    with caplog.at_level(logging.WARNING, logger="progrock.state"):
        assert LiveState.from_hash({**FULL, "status": "paused"}) is None
    assert "'status' must be a status, got 'paused'" in caplog.text


@pytest.mark.parametrize(("name", "attribute"), [("progress", "progress"), ("rp", "rate_progress")])
def test_a_field_that_is_not_a_number_reads_as_absent_and_is_logged(
    name: str, attribute: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As the Lua scripts read it (tonumber(x) or 0), with a warning naming the field and value."""
    with caplog.at_level(logging.WARNING, logger="progrock.state"):
        state = LiveState.from_hash({**FULL, name: "lots"})
    assert state is not None and getattr(state, attribute) == 0.0
    assert state.seq == 7 and state.rate == 1.25  # the other fields are read as usual
    assert f"field '{name}' must be a number, got 'lots'" in caplog.text


@pytest.mark.parametrize(
    "result", ["42 rows", "42", "", 42, 1.5, True, None, [1, "a"], {"rows": 3}]
)
def test_a_result_reads_back_as_it_was_written(result: object) -> None:
    """A task's result survives the hash as it was, a string that looks like a number included."""
    fields = encode_fields({"status": "succeeded", "result": result, "error": None})
    assert view_from_hash("t-1", fields).result == result
