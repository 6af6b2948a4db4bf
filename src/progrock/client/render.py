"""Pure rendering of the terminal client's progress line and final line.

Everything here turns values into strings (ASCII only, so any terminal
encoding works); :class:`Throttle` decides when a non-TTY output prints a line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from progrock.client.state import Outcome, TaskView

BAR_WIDTH = 24
MIN_WIDTH = 20


def format_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_rate(rate: float | None) -> str:
    """Percent per second, e.g. ``3.1 %/s``; ``-- %/s`` when unknown."""
    if rate is None or not math.isfinite(rate):
        return "-- %/s"
    if round(rate, 1) >= 10:
        return f"{rate:.0f} %/s"
    return f"{rate:.1f} %/s"


def bar(progress: float, width: int = BAR_WIDTH) -> str:
    """``[#####-----]`` with ``width`` cells between the brackets."""
    clamped = min(100.0, max(0.0, progress))
    filled = int(clamped / 100 * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def eta_of(view: TaskView, rate: float | None) -> float | None:
    """The server's ETA, else one derived from ``rate``; ``None`` when unknowable."""
    if view.eta_s is not None:
        return view.eta_s
    if rate is None or rate <= 0:
        return None
    return (100.0 - view.progress) / rate


def _clean(text: str) -> str:
    """One line of printable ASCII: control characters and non-ASCII become ``?``/spaces."""
    out = []
    for ch in text:
        if ch in "\r\n\t":
            out.append(" ")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def progress_line(view: TaskView, *, rate: float | None = None, width: int = 80) -> str:
    """The live line: percentage, bar, rate, ETA, then the message, at most ``width - 1`` long.

    ``rate`` overrides ``view.rate`` (the caller may pass a local estimate).
    """
    width = max(MIN_WIDTH, width)
    if rate is None:
        rate = view.rate
    pct = f"{view.progress:5.1f}%"
    if view.status == "queued":
        tail = "queued"
    elif view.status == "running":
        tail = f"{format_rate(rate)}  ETA {format_duration(eta_of(view, rate))}"
    else:
        tail = view.status
    line = f"{pct} {bar(view.progress)} {tail}"
    if view.message and view.status in ("queued", "running"):
        line += "  " + _clean(view.message)
    limit = width - 1  # never touch the last column: some terminals wrap there
    if len(line) > limit:
        line = line[: max(0, limit - 3)] + "..."
    return line


def final_line(view: TaskView, outcome: Outcome) -> str:
    """``complete: <result JSON>``, ``failed: <code>: <detail>`` or ``cancelled``."""
    if outcome is Outcome.SUCCEEDED:
        return "complete: " + json.dumps(view.result, sort_keys=True)
    if outcome is Outcome.FAILED:
        return f"failed: {view.error_code or 'unknown'}: {view.error_detail or ''}".rstrip()
    if outcome is Outcome.CANCELLED:
        return "cancelled"
    raise ValueError(f"expected a task outcome, got {outcome!r}")


@dataclass
class Throttle:
    """When a non-TTY output should print a line: every ``interval`` s or ``step`` % of change.

    The first update always prints; after that, an update prints when the
    progress moved by ``step`` points since the last printed line, or when
    ``interval`` seconds passed and something changed.
    """

    interval: float = 1.0
    step: float = 10.0
    _last_time: float | None = None
    _last_progress: float = 0.0
    _last_text: str | None = None

    def should_print(self, now: float, progress: float, text: str) -> bool:
        if self._last_time is None:
            return self._mark(now, progress, text)
        if abs(progress - self._last_progress) >= self.step:
            return self._mark(now, progress, text)
        if now - self._last_time >= self.interval and text != self._last_text:
            return self._mark(now, progress, text)
        return False

    def _mark(self, now: float, progress: float, text: str) -> bool:
        self._last_time, self._last_progress, self._last_text = now, progress, text
        return True
