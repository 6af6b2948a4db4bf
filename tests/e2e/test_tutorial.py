"""docs/tutorial.md, followed verbatim (see tests/e2e/tutorial.py): check, migrate, the
four processes it names, its page, and a task to 100 % over a real socket."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.tutorial import TUTORIAL, Followed, follow, replace_assignment, tutorial_blocks
from tests.e2e.upprocess import Up
from tests.e2e.wsclient import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Followed]:
    """The tutorial followed to its end in a new folder, its processes running."""
    with follow(tmp_path_factory.mktemp("tutorial"), redis_server) as done:
        yield done


def test_every_block_is_marked_and_the_four_processes_are_named() -> None:
    """Each fenced block of the tutorial is followed by this test; it names the four processes."""
    blocks = tutorial_blocks(TUTORIAL.read_text())
    processes = {b.args[0]: b.body.strip() for b in blocks if b.action == "process"}
    assert processes == {
        "web": "python manage.py runserver",
        "worker": "python manage.py runprogrock",
        "delay": "python manage.py rundelay",
        "backend": "progrock-backend",
    }


def test_a_broken_snippet_is_caught(tmp_path: Path) -> None:
    """A replace that finds nothing to replace fails, rather than leaving the file unchanged."""
    with pytest.raises(AssertionError, match="0 top-level assignments to INSTALLED_APPS"):
        replace_assignment("DEBUG = True\n", "INSTALLED_APPS", "INSTALLED_APPS = []\n", "s.py")


def test_check_is_clean_and_migrate_creates_the_task_table(followed: Followed) -> None:
    """`manage.py check` finds no issue in the tutorial's project; migrate applies ProgRock's."""
    check = followed.outputs["python manage.py check"]
    assert "System check identified no issues (0 silenced)." in check.stdout, check
    assert "progrock." not in check.stdout + check.stderr
    migrate = followed.outputs["python manage.py migrate"]
    assert "Applying progrock.0001_initial... OK" in migrate.stdout, migrate.stdout


def test_progrock_status_sees_a_worker_and_a_delay_server(followed: Followed) -> None:
    """`manage.py progrock_status`, run where the tutorial runs it, lists the live processes."""
    status = followed.outputs["python manage.py progrock_status"].stdout
    assert re.search(r"^worker\s", status, re.MULTILINE), status
    assert re.search(r"^delay\s", status, re.MULTILINE), status


def test_the_page_reaches_100_percent_over_a_real_socket(followed: Followed) -> None:
    """The page serves its start button and script; a task started on the socket with the
    page's session completes at 100 %, and the HTTP API reports it to that session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(followed.url + "/", timeout=10) as response:
        page = response.read().decode()
    assert 'data-kind="rock"' in page and "data-progrock-start" in page, page
    scripts = re.findall(r'<script type="module" src="([^"]+)"', page)
    assert scripts, page
    for src in scripts:
        with opener.open(followed.url + src, timeout=10) as response:
            assert response.status == 200 and b"ProgRock" in response.read(), src
    session = next(c.value for c in jar if c.name == "sessionid")

    task_id, terminal = asyncio.run(asyncio.wait_for(task_to_the_end(followed.url, session), 120))
    assert terminal["type"] == "complete" and terminal["progress"] == 100, terminal
    with opener.open(f"{followed.url}/prog/api/tasks/{task_id}/", timeout=10) as response:
        shown = json.load(response)
    assert shown["status"] == "succeeded" and shown["progress"] == 100, shown


async def task_to_the_end(url: str, session: str | None) -> tuple[str, dict[str, Any]]:
    """Start a rock task on a real socket and wait for its end."""
    client = await Client.connect(url, session=session)
    try:
        task_id = await client.start(kind="rock")
        return task_id, await client.until_terminal(task_id, timeout=90)
    finally:
        await client.close()


def test_all_in_one_terminal_progrock_up_runs_the_project(
    followed: Followed, tmp_path: Path
) -> None:
    """The tutorial's `progrock up` line runs its project (own Redis and backend, as it
    says: the settings read the URLs it hands over) and a task completes. Last: as the
    tutorial says, the four terminals stop first (they share the project's database)."""
    followed.supervisor.stop_all()
    (line,) = [b.body.strip() for b in tutorial_blocks(TUTORIAL.read_text()) if b.action == "up"]
    argv = line.split()
    assert argv[:2] == ["progrock", "up"], argv
    env = {k: v for k, v in followed.env.items() if k not in ("REDIS_URL", "PROGROCK_BACKEND_URL")}
    up = Up(
        *argv[2:],
        *("--port", "0", "--workers", "1", "--data-dir", str(tmp_path / "data")),
        cwd=followed.project,
        env=env,
    )
    try:
        url = up.wait_up()
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            assert 'data-kind="rock"' in response.read().decode()
        _, terminal = asyncio.run(asyncio.wait_for(task_to_the_end(url, None), 120))
        assert terminal["type"] == "complete" and terminal["progress"] == 100, terminal
    finally:
        up.close()
