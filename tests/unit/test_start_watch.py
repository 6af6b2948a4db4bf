"""The pure parts of start watchdogs: the next attempt, its envelope, the budget."""

from __future__ import annotations

from django.test import override_settings

from progrock.worker import start_watch

START = {"type": "progrock.start", "task_id": "t-1", "kind": "rock", "owner": "o"}


def test_the_first_watchdog_is_attempt_one_failing_from_when_it_fires() -> None:
    with override_settings(PROGROCK={"START_TIMEOUT": 7.0}):
        [envelope] = start_watch.watchdogs([START], now=1000.0)
    assert envelope["key"] == "start:t-1" and envelope["delay"] == 7000.0
    assert envelope["channel"] == "prog-rocker" and envelope["merge"] is False
    content = envelope["content"]
    assert len(content.pop("nonce")) == 32
    assert content == {**START, "attempt": 1, "lost_since": 1007.0}


def test_a_later_attempt_keeps_the_time_of_the_first_loss_and_gets_a_new_nonce() -> None:
    before = {**START, "attempt": 2, "lost_since": 5.0, "first_failure": 3.0, "nonce": "n"}
    again = start_watch.next_attempt(before, now=900.0)
    assert again["attempt"] == 3 and again["lost_since"] == 5.0 and again["first_failure"] == 3.0
    assert again["nonce"] != "n"


def test_the_budget_counts_from_the_first_loss_only() -> None:
    with override_settings(PROGROCK={"FAILURE_BUDGET": 30.0}):
        assert not start_watch.budget_spent(START, now=10_000.0)  # never lost
        assert not start_watch.budget_spent({**START, "lost_since": 100.0}, now=130.0)
        assert start_watch.budget_spent({**START, "lost_since": 100.0}, now=130.5)
        # Backend errors have their own budget: a retry still calls the backend.
        assert not start_watch.budget_spent({**START, "first_failure": 100.0}, now=10_000.0)
