"""Fixtures of the browser tests: a real headless Chromium and the whole stack.

The browser is Debian's ``chromium`` (Playwright's own download is not used):
``/usr/bin/chromium``, or ``$PROGROCK_CHROMIUM``. When it is missing the
``chromium_path`` fixture runs ``scripts/install-browser`` once, and skips the
browser tests with a loud message only if that fails.

Timeouts are multiples of ``UNIT`` seconds, scaled by ``PROGROCK_TEST_TIMEOUT_SCALE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.browserkit import CHROMIUM_ARGS, ROOT, SCREENSHOTS, ms

INSTALL_SCRIPT = ROOT / "scripts" / "install-browser"


def _loud_skip(reason: str) -> None:
    banner = "!" * 78
    sys.stderr.write(f"\n{banner}\nBROWSER TESTS SKIPPED: {reason}\n{banner}\n")
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")


@pytest.fixture(scope="package")
def chromium_path() -> str:
    """Path of a Chromium executable, installed by scripts/install-browser if missing."""
    path = Path(os.environ.get("PROGROCK_CHROMIUM", "/usr/bin/chromium"))
    if not os.access(path, os.X_OK):
        result = subprocess.run(
            [str(INSTALL_SCRIPT)],
            env={**os.environ, "PROGROCK_CHROMIUM": str(path)},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not os.access(path, os.X_OK):
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            _loud_skip(
                f"no Chromium at {path} and scripts/install-browser failed "
                f"(exit {result.returncode}): {' | '.join(tail)}"
            )
    return str(path)


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    """A headless Chromium for the session; each launch gets a fresh temporary profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies, so its own Django session)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(ms(15))
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught JavaScript exceptions the test's page reported."""
    return []


@pytest.fixture
def page(context: Any, page_errors: list[str]) -> Iterator[Any]:
    """A page that fails the test if its JavaScript throws an uncaught exception."""
    pg = context.new_page()
    pg.on("pageerror", lambda exc: page_errors.append(f"pageerror: {exc}"))
    yield pg
    if page_errors:
        pytest.fail("the page reported errors:\n" + "\n".join(page_errors))


@pytest.fixture(scope="package")
def stack() -> Iterator[Any]:
    """The whole ProgRock stack (Redis, backend, delay server, 2 workers, web)."""
    from progrock.local.stack import Stack

    with Stack(port=0, workers=2) as running:
        yield running


@pytest.fixture(scope="package")
def screenshots_dir() -> Path:
    """artifacts/screenshots/ (git-ignored), created on demand."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
