"""Pure rendering of the terminal client's lines, and where its output goes."""

from __future__ import annotations

import io
import json

import pytest

from progrock.client.display import CLEAR_LINE, Display
from progrock.client.render import (
    Throttle,
    bar,
    final_line,
    format_duration,
    format_rate,
    progress_line,
)
from progrock.client.state import Outcome, TaskView


def running(value: float, **extra: object) -> TaskView:
    view = TaskView(task_id="t", kind="rock", status="running", progress=value)
    for key, item in extra.items():
        setattr(view, key, item)
    return view


def test_durations_read_like_a_clock() -> None:
    """Seconds print as m:ss or h:mm:ss; unknown or nonsense prints --:--."""
    assert format_duration(0) == "0:00"
    assert format_duration(65.4) == "1:05"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "--:--"
    assert format_duration(-1) == "--:--"
    assert format_duration(float("inf")) == "--:--"


def test_rates_print_in_percent_per_second() -> None:
    """A rate prints with one decimal below 10 and none above; unknown prints --."""
    assert format_rate(3.14) == "3.1 %/s"
    assert format_rate(12.6) == "13 %/s"
    assert format_rate(9.97) == "10 %/s"  # no flicker between "10.0" and "10"
    assert format_rate(None) == "-- %/s"


def test_bar_fills_in_proportion_and_clamps() -> None:
    """The bar has a fixed width; out-of-range progress is clamped."""
    assert bar(0, 10) == "[----------]"
    assert bar(50, 10) == "[#####-----]"
    assert bar(100, 10) == "[##########]"
    assert bar(150, 10) == bar(100, 10)
    assert bar(-5, 10) == bar(0, 10)


def test_progress_line_shows_percentage_bar_rate_eta_and_message() -> None:
    """A running task's line holds all five parts."""
    line = progress_line(running(42, message="hashing block 7", rate=2.0, eta_s=29), width=120)
    assert line.startswith(" 42.0% [")
    assert "2.0 %/s" in line
    assert "ETA 0:29" in line
    assert line.endswith("hashing block 7")


def test_eta_derives_from_the_rate_when_the_server_gives_none() -> None:
    """With a rate but no ETA, ETA is the remaining percent over the rate."""
    line = progress_line(running(50), rate=5.0, width=120)
    assert "ETA 0:10" in line


def test_queued_and_finished_tasks_show_their_status() -> None:
    """A queued task says queued; a finished one names its status instead of rate and ETA."""
    assert "queued" in progress_line(TaskView(status="queued"))
    done = running(100, status="succeeded", message="rocking 96%")
    assert progress_line(done).endswith("succeeded")  # a stale message is not shown


def test_line_never_reaches_the_last_column_and_stays_one_line() -> None:
    """Long messages are cut with ... before the width; control characters become spaces."""
    line = progress_line(running(10, message="x" * 500 + "\n\r"), width=60)
    assert len(line) == 59
    assert line.endswith("...")
    assert "\n" not in progress_line(running(1, message="a\nb"), width=80)
    assert progress_line(running(1, message="caf\u00e9"), width=80).endswith("caf?")


def test_final_lines_name_the_outcome() -> None:
    """complete with result JSON, failed with code and detail, or cancelled."""
    done = running(100, result={"digest": "ab", "n": 2})
    assert final_line(done, Outcome.SUCCEEDED) == 'complete: {"digest": "ab", "n": 2}'
    failed = running(30, error_code="backend_failed", error_detail="boom at 30")
    assert final_line(failed, Outcome.FAILED) == "failed: backend_failed: boom at 30"
    assert final_line(running(12), Outcome.CANCELLED) == "cancelled"
    with pytest.raises(ValueError, match=r"got <Outcome\.PROBLEM"):
        final_line(done, Outcome.PROBLEM)


def test_throttle_prints_first_then_every_interval_or_step() -> None:
    """The first update prints; then only after 1 s with a change, or 10 points of progress."""
    throttle = Throttle(interval=1.0, step=10.0)
    assert throttle.should_print(0.0, 0, "a")
    assert not throttle.should_print(0.5, 5, "b")
    assert throttle.should_print(0.6, 10, "c")  # 10 points since the last printed line
    assert not throttle.should_print(1.2, 12, "d")
    assert throttle.should_print(1.7, 13, "e")  # a second later, and changed
    assert not throttle.should_print(5.0, 13, "e")  # nothing changed


def _display(
    *, json_mode: bool = False, tty: bool = False
) -> tuple[Display, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Display(out, err, json_mode=json_mode, tty=tty, width=lambda: 80), out, err


def test_json_mode_prints_each_message_compactly_and_nothing_else() -> None:
    """In JSON mode stdout holds one compact object per message and no bar or final line."""
    display, out, err = _display(json_mode=True, tty=True)
    msg = {"type": "progress", "task_id": "t", "seq": 2, "progress": 5}
    display.message(msg)
    display.update(running(5), None, 0.0)
    display.final(running(100), Outcome.SUCCEEDED)
    display.note("progrock: hello")
    lines = out.getvalue().splitlines()
    assert lines == ['{"type":"progress","task_id":"t","seq":2,"progress":5}']
    assert json.loads(lines[0]) == msg
    assert err.getvalue() == "progrock: hello\n"


def test_tty_redraws_one_line_in_place() -> None:
    """On a TTY each update rewrites the line after a carriage return; the end adds a newline."""
    display, out, _ = _display(tty=True)
    display.update(running(10), None, 0.0)
    display.update(running(20), None, 0.1)
    display.final(running(100, status="succeeded", result=1), Outcome.SUCCEEDED)
    text = out.getvalue()
    assert text.count(CLEAR_LINE) == 3
    assert text.count("\n") == 2
    assert text.endswith("complete: 1\n")


def test_tty_prompt_holds_the_bar_until_released() -> None:
    """While a question is asked, updates do not overwrite it; release redraws the bar."""
    display, out, err = _display(tty=True)
    display.update(running(10), None, 0.0)
    display.prompt("Cancel? ")
    before = out.getvalue()
    display.update(running(30), None, 0.1)
    assert out.getvalue() == before
    display.release()
    assert " 30.0%" in out.getvalue()[len(before) :]
    assert err.getvalue() == "Cancel? "


def test_non_tty_prints_throttled_lines() -> None:
    """Without a TTY, updates become plain lines, throttled, then the final line."""
    display, out, _ = _display(tty=False)
    for n in range(10):
        display.update(running(n), None, n * 0.1)
    display.final(running(9, status="cancelled"), Outcome.CANCELLED)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  0.0%")
    assert lines[-1] == "cancelled"
    assert "\r" not in out.getvalue()
