"""The status rules the code enforces (Lua and SQL guards, read here) are protocol.TRANSITIONS."""

from __future__ import annotations

import re

from progrock.exceptions import InvalidTransition
from progrock.protocol import Status, check_transition
from progrock.state import scripts, tasks
from progrock.worker.progress_copy import PROGRESS_IN


def allowed(old: Status, new: Status) -> bool:
    try:
        check_transition(old, new)
    except InvalidTransition:
        return False
    return True


def moves_to(new: Status) -> set[Status]:
    """The statuses check_transition lets a task leave for ``new`` (``new`` itself excluded)."""
    return {old for old in Status if old != new and allowed(old, new)}


def lua_statuses(condition: str) -> set[Status]:
    """The statuses a Lua condition compares ``st`` with (``st == 'x' or st == 'y'``)."""
    return {Status(name) for name in re.findall(r"st == '(\w+)'", condition)}


def lua_condition(script: str, body: str) -> str:
    """The condition of the ``if``/``elseif`` whose branch begins with ``body``."""
    match = re.search(r"(?:if|elseif) ([^\n]*?) then\s*\n\s*" + re.escape(body), script)
    assert match is not None, f"no branch beginning {body!r} in the script"
    return match.group(1)


def test_rows_are_marked_running_exactly_from_where_the_protocol_allows() -> None:
    """mark_running's SQL guard (RUN_FROM) is every status a task may start running from."""
    assert set(tasks.RUN_FROM) == moves_to(Status.RUNNING)


def test_rows_end_exactly_from_where_the_protocol_allows() -> None:
    """Each terminal status's SQL guard (END_FROM) is every status that end may follow,
    and every move the protocol allows is one some write makes."""
    for end, sources in tasks.END_FROM.items():
        assert set(sources) == moves_to(end), end
    written = {(old, Status.RUNNING) for old in tasks.RUN_FROM} | {
        (old, end) for end, sources in tasks.END_FROM.items() for old in sources
    }
    protocol = {(old, new) for new in Status for old in moves_to(new)}
    assert written == protocol


def test_progress_is_written_only_to_rows_that_may_stay_as_they_are() -> None:
    """The progress copy's guard keeps a row's status, which only an unfinished task may do."""
    assert PROGRESS_IN and all(allowed(status, status) for status in PROGRESS_IN)
    assert all(not status.terminal for status in PROGRESS_IN)


def test_apply_refuses_every_change_after_exactly_the_statuses_with_no_way_out() -> None:
    """APPLY_LUA's refusal (-1) names the statuses from which the protocol allows nothing."""
    refused = lua_statuses(lua_condition(scripts.APPLY_LUA, "reply = -1"))
    final = {old for old in Status if not any(allowed(old, new) for new in Status)}
    assert refused == final and final  # (the terminal ones)


def test_a_queued_state_is_written_only_over_none_or_queued() -> None:
    """INIT_QUEUED_LUA writes 'queued' only where the protocol lets a task be queued: queued."""
    condition = lua_condition(scripts.INIT_QUEUED_LUA, "redis.call('HSET'")
    assert condition.startswith("not st or ")  # and where there is no live state at all
    over = lua_statuses(condition)
    assert over == {old for old in Status if allowed(old, Status.QUEUED)}
