"""Constants and helpers of the browser tests (a module: conftest is not importable)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UNIT = float(os.environ.get("PROGROCK_TEST_TIMEOUT_SCALE", "1"))
"""One second of test timeout, scaled for slow machines."""


def ms(seconds: float) -> float:
    """A Playwright timeout (milliseconds) of ``seconds`` scaled seconds."""
    return seconds * UNIT * 1000


FAST = {"step": "20", "interval_ms": "100"}
"""Rock params that finish in about half a second."""
SLOW = {"step": "4", "interval_ms": "200"}
"""Rock params that run for about five seconds."""


def open_demo(page: Any, stack: Any) -> None:
    """Load the demo page of a fresh visitor and wait until it is live."""
    page.goto(stack.url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=ms(10))
    expect(page.locator("#tasks-empty")).to_have_text(re.compile("No tasks yet"))


def start(page: Any, params: dict[str, str], count: int = 1, kind: str = "rock") -> list[str]:
    """Start ``count`` tasks from the form; return their ids (newest first)."""
    page.click(f'.kind-switch label:has(input[value="{kind}"])')
    expect(page.locator(f'input[name="kind"][value="{kind}"]')).to_be_checked()
    for name, value in params.items():
        page.fill(f'input[name="{name}"]', value)
    page.fill("#count", str(count))
    before = page.locator(".task").count()
    page.click("#start-button")
    cards = page.locator(".task[data-task-id]")
    expect(cards).to_have_count(before + count)
    ids: list[str] = [cards.nth(i).get_attribute("data-task-id") for i in range(count)]
    return ids


def card(page: Any, task_id: str) -> Any:
    """The task's card on the demo page."""
    return page.locator(f'.task[data-task-id="{task_id}"]')


def progress_of(page: Any, task_id: str) -> float:
    """The task's progress as its progress bar shows it (aria-valuenow)."""
    value = card(page, task_id).locator(".bar").get_attribute("aria-valuenow")
    return float(value)


def wait_progress(page: Any, task_id: str, above: float, timeout: float = 15) -> None:
    """Wait until the task's bar shows more than ``above`` percent."""
    page.wait_for_function(
        "([id, above]) => Number(document.querySelector(`.task[data-task-id='${id}'] .bar`)"
        ".getAttribute('aria-valuenow')) > above",
        arg=[task_id, above],
        timeout=ms(timeout),
    )
