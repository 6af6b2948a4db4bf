"""Where the terminal client's output goes: a live bar, plain lines, or JSON lines.

* JSON mode: every protocol message received, one compact object per line on
  stdout, flushed; nothing else on stdout.
* TTY: one line redrawn in place with ``\\r``; notes clear it first.
* Otherwise: a line per update at most every second or on 10 % of change.

Notes and errors always go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO

from progrock.client.render import Throttle, final_line, progress_line
from progrock.client.state import Outcome, TaskView

CLEAR_LINE = "\r\x1b[K"


class Display:
    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        *,
        json_mode: bool,
        tty: bool,
        width: Callable[[], int] = lambda: 80,
        throttle: Throttle | None = None,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.json_mode = json_mode
        self.tty = tty and not json_mode
        self._width = width
        self._throttle = throttle or Throttle()
        self._drawn = False  # a bar line is on screen without its newline
        self._last_line = ""
        self.held = False

    def message(self, msg: Any) -> None:
        """Echo a received protocol message (JSON mode only)."""
        if self.json_mode and isinstance(msg, dict):
            self.stdout.write(json.dumps(msg, separators=(",", ":")) + "\n")
            self.stdout.flush()

    def update(self, view: TaskView, rate: float | None, now: float) -> None:
        """Show the task's current state (unless JSON mode or held by a prompt)."""
        if self.json_mode:
            return
        if self.tty:
            line = progress_line(view, rate=rate, width=self._width())
            self._last_line = line
            if not self.held:
                self.stdout.write(CLEAR_LINE + line)
                self.stdout.flush()
                self._drawn = True
            return
        line = progress_line(view, rate=rate, width=80)
        if self._throttle.should_print(now, view.progress, line):
            self.stdout.write(line + "\n")
            self.stdout.flush()

    def _end_bar(self) -> None:
        if self._drawn:
            self.stdout.write("\n")
            self.stdout.flush()
            self._drawn = False

    def final(self, view: TaskView, outcome: Outcome) -> None:
        """The last line: ``complete: …``, ``failed: …`` or ``cancelled``."""
        if self.json_mode:
            return
        if self.held:  # the task ended while a question was on screen
            self.stderr.write("\n")
            self.stderr.flush()
            self.held = False
        if self.tty:
            line = progress_line(view, width=self._width())
            self.stdout.write(CLEAR_LINE + line + "\n")
            self._drawn = False
        self.stdout.write(final_line(view, outcome) + "\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        """A line on stderr, leaving the bar intact below it on a TTY."""
        if self._drawn:
            self.stdout.write(CLEAR_LINE)
            self.stdout.flush()
        self.stderr.write(text + "\n")
        self.stderr.flush()
        if self._drawn and not self.held:
            self.stdout.write(self._last_line)
            self.stdout.flush()

    def prompt(self, text: str) -> None:
        """Hold the bar and ask a question on stderr (the answer comes from stdin)."""
        self.held = True
        if self._drawn:
            self.stdout.write(CLEAR_LINE)
            self.stdout.flush()
            self._drawn = False
        self.stderr.write(text)
        self.stderr.flush()

    def release(self) -> None:
        """Resume drawing after a prompt."""
        self.held = False
        if self.tty and self._last_line:
            self.stdout.write(CLEAR_LINE + self._last_line)
            self.stdout.flush()
            self._drawn = True

    def close(self) -> None:
        """Leave the cursor on a fresh line."""
        self._end_bar()
