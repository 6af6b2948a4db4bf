"""The markup of a ProgRock progress bar, rendered on the server.

One template (``progrock/bar.html``) serves ``{% progrock_bar %}`` (a live bar
that ``progrock-bar.js`` wires to the page's socket), the fragment endpoint (a
still picture of a task's current state, for htmx polling) and the inert bar
shown for bad input. ``progrock-bar.js`` writes the same texts as
:func:`status_label`, :func:`format_percent`, :func:`format_eta` and
:func:`outcome_text` when it updates a bar.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from progrock.protocol import TaskView

TEMPLATE = "progrock/bar.html"
DEFAULT_LABEL = "Progress"
STATUS_LABELS = {
    "loading": "Loading…",
    "idle": "Not started",
    "queued": "Queued",
    "running": "Running",
    "succeeded": "Complete",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "invalid": "Unavailable",
}
"""``data-status`` values of a bar and their texts: the task statuses, plus
``loading`` (no state yet), ``idle`` (a start form not clicked) and
``invalid`` (an inert bar)."""
ACTIVE = frozenset({"loading", "queued", "running"})


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def format_percent(progress: float | None, status: str) -> str:
    """``"42%"``: rounded down, so only a finished task shows 100 %."""
    if status == "succeeded":
        return "100%"
    return f"{math.floor(progress or 0)}%"


def format_eta(eta_s: float | None) -> str:
    """``"12 s left"``, ``"3 min 5 s left"``, ``"2 h 4 min left"``; empty if unknown."""
    if eta_s is None or not math.isfinite(eta_s) or eta_s < 0:
        return ""
    seconds = math.ceil(eta_s)
    if seconds < 60:
        return f"{seconds} s left"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s left" if seconds else f"{minutes} min left"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min left" if minutes else f"{hours} h left"


def outcome_text(status: str, result: Any = None, error: dict[str, str] | None = None) -> str:
    """The result/error slot's text for a finished task; empty otherwise."""
    if status == "succeeded":
        if result is None:
            return "Done"
        if isinstance(result, str):
            return result
        # As JavaScript's JSON.stringify writes it (progrock-bar.js).
        return json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    if status == "failed":
        error = error or {}
        return error.get("detail") or error.get("code") or "The task failed"
    if status == "cancelled":
        return "The task was cancelled"
    return ""


@dataclass(frozen=True, slots=True)
class Bar:
    """Everything the template shows; see the module docstring for the kinds of bar."""

    label: str
    status: str = "loading"
    task_id: str | None = None
    kind: str | None = None
    params: str | None = None  # JSON, for a start form's data-params
    progress: float | None = None  # None: indeterminate
    message: str = ""
    eta_s: float | None = None
    outcome: str = ""
    live: bool = True  # wired by progrock-bar.js
    cancel: bool = True
    cancel_url: str | None = None  # fragments: the htmx cancel request
    csrf_token: str | None = None

    @property
    def status_label(self) -> str:
        return status_label(self.status)

    @property
    def percent(self) -> str:
        return format_percent(self.progress, self.status)

    @property
    def value(self) -> str | None:
        """The ``<progress>`` value attribute (None: indeterminate)."""
        if self.progress is None:
            return None
        return f"{min(100.0, max(0.0, self.progress)):g}"

    @property
    def eta(self) -> str:
        return format_eta(self.eta_s)

    @property
    def show_cancel(self) -> bool:
        return self.cancel and self.status in ACTIVE and self.task_id is not None


def task_bar(task_id: str, *, label: str = DEFAULT_LABEL, cancel: bool = True) -> Bar:
    """A live bar for a task whose state the browser is about to fetch."""
    return Bar(label=label, task_id=task_id, cancel=cancel)


def start_bar(kind: str, params: dict[str, Any], *, label: str, cancel: bool = True) -> Bar:
    """A live bar with a button that starts a task of ``kind``."""
    return Bar(
        label=label,
        status="idle",
        kind=kind,
        params=json.dumps(params, separators=(",", ":")),
        progress=0,
        cancel=cancel,
    )


def inert_bar(detail: str, *, label: str = DEFAULT_LABEL) -> Bar:
    """A bar that does nothing and says why (bad input, a task one may not see)."""
    return Bar(label=label, status="invalid", progress=0, outcome=detail, cancel=False)


def view_bar(
    view: TaskView,
    *,
    label: str = DEFAULT_LABEL,
    cancel_url: str | None = None,
    csrf_token: str | None = None,
) -> Bar:
    """A still picture of a task's current state (the fragment endpoint)."""
    status = view.status.value
    return Bar(
        label=label,
        status=status,
        task_id=view.task_id,
        kind=view.kind,
        progress=None if status == "queued" else view.progress,
        message=(view.message or "") if status in ACTIVE else "",
        eta_s=view.eta_s if status == "running" else None,
        outcome=outcome_text(status, view.result, view.error),
        live=False,
        cancel=cancel_url is not None,
        cancel_url=cancel_url,
        csrf_token=csrf_token,
    )


def render_bar(bar: Bar) -> SafeString:
    """The bar's HTML (every value escaped by the template)."""
    return SafeString(render_to_string(TEMPLATE, {"bar": bar}).strip())
