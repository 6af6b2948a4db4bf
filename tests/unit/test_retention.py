"""Retention: durations, and deleting only ended tasks' old rows (on the test database)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command, execute_from_command_line

from progrock.models import Task
from progrock.retention import delete_ended, format_duration, parse_duration, retention_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("90m", 5400),
        ("45s", 45),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("1.5h", 5400),
        (" 7D ", 7 * 86400),
    ],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    """30d, 12h, 90m, 45s, 2w and combinations are read as seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30x", "-5d", "d", "30 d", "0d", "1d-2h", "3e2s"])
def test_a_malformed_duration_is_refused_quoting_it(text: str) -> None:
    """Anything else raises ValueError with the accepted shapes and the value quoted."""
    with pytest.raises(ValueError, match=f"got {text!r}"):
        parse_duration(text)


def test_retention_accepts_none_strings_timedeltas_and_seconds() -> None:
    """RETENTION: None keeps every row; "30d", timedelta(days=30) and 2592000 agree."""
    assert retention_seconds(None) is None
    assert retention_seconds("30d") == retention_seconds(timedelta(days=30)) == 2592000.0
    assert retention_seconds(2592000) == 2592000.0
    for bad in (0, -1, True, [], timedelta(0), float("inf")):
        with pytest.raises(ValueError, match="must be None, a duration like 30d"):
            retention_seconds(bad)


def test_format_duration_picks_the_largest_whole_unit() -> None:
    """For messages: 2592000 s is 30d, 5400 s 90m, 1.5 s 1.5s."""
    assert [format_duration(s) for s in (2592000, 43200, 5400, 1.5)] == [
        "30d",
        "12h",
        "90m",
        "1.5s",
    ]


def make(status: str, ended_days_ago: float | None) -> Task:
    finished = None
    if ended_days_ago is not None:
        finished = datetime.now(UTC) - timedelta(days=ended_days_ago)
    return Task.objects.create(owner="o", kind="rock", status=status, finished_at=finished)


@pytest.mark.django_db
def test_only_ended_tasks_older_than_the_duration_are_deleted_in_batches() -> None:
    """Old succeeded/failed/cancelled rows go (several statements' worth); recent ones, and
    queued or running ones however old, stay."""
    old = [make(s, 40) for s in ("succeeded", "failed", "cancelled") for _ in range(5)]
    keep = [make("succeeded", 1), make("queued", None), make("running", None)]
    Task.objects.filter(pk__in=[t.pk for t in keep[1:]]).update(
        created_at=datetime.now(UTC) - timedelta(days=400)
    )
    assert delete_ended(30 * 86400, batch=4) == len(old)
    assert set(Task.objects.values_list("pk", flat=True)) == {t.pk for t in keep}


@pytest.mark.django_db
def test_a_limit_bounds_what_one_call_deletes() -> None:
    """With limit (the sweep's bounded batch), one call deletes at most that many."""
    for _ in range(7):
        make("failed", 40)
    assert delete_ended(86400, limit=5, batch=2) == 5
    assert Task.objects.count() == 2


@pytest.mark.django_db
def test_cleanup_deletes_and_dry_run_only_counts() -> None:
    """progrock_cleanup --dry-run counts; without it, deletes; both say what they did."""
    make("succeeded", 40), make("running", None)
    out = io.StringIO()
    call_command("progrock_cleanup", "--older-than", "30d", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "would delete 1 tasks that ended more than 30d ago"
    assert Task.objects.count() == 2
    out = io.StringIO()
    call_command("progrock_cleanup", "--older-than", "30d", stdout=out)
    assert out.getvalue().strip() == "deleted 1 tasks that ended more than 30d ago"
    assert list(Task.objects.values_list("status", flat=True)) == ["running"]


# transaction=True: Django closes every connection after a command run from the
# command line; inside a test's transaction PostgreSQL could not reconnect.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("argv", [["--older-than", "30x"], ["--older-than=-5d"], []])
def test_a_malformed_or_missing_duration_exits_2_with_usage_deleting_nothing(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """From the command line: exit status 2, the usage and the reason on stderr, no row gone
    (no --older-than and no RETENTION counts as missing)."""
    make("succeeded", 400)
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "progrock_cleanup", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: manage.py progrock_cleanup")
    assert ("30d, 12h, 90m" in err) if argv else ("--older-than is required" in err)
    assert Task.objects.count() == 1
