"""``progrock up`` and :class:`~progrock.local.stack.Stack` with the real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from progrock.local.stack import Stack
from tests.e2e.upprocess import STARTUP, Up, until

pytestmark = pytest.mark.e2e


@pytest.fixture
def run_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """Factory: start ``progrock up ARGS`` from a directory unrelated to the source tree."""
    started: list[Up] = []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> Up:
        up = Up(*args, cwd=elsewhere)
        started.append(up)
        return up

    yield run
    for up in started:
        up.close()
    assert list(elsewhere.iterdir()) == [], "progrock up wrote into its working directory"


def assert_all_gone(processes: list[psutil.Process], output: str) -> None:
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}\n{output}"


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        status: int = response.status
        return status


def page_scripts(url: str) -> list[str]:
    """The ``src`` of every script of the page at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return re.findall(r'<script[^>]*\bsrc="([^"]+)"', response.read().decode())


# A project as the tutorial lays it out: its asgi.py hands HTTP to Django as
# startproject writes it, serving no static files of its own.
_TUTORIAL_PROJECT = {
    "mysite/__init__.py": "",
    "mysite/settings.py": """
import os
SECRET_KEY = "e2e"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "django.contrib.staticfiles", "channels", "progrock",
]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates",
              "DIRS": [os.path.dirname(__file__)], "APP_DIRS": True}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
STATIC_URL = "static/"
USE_TZ = True
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ASGI_APPLICATION = "mysite.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
    "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]}}}
PROGROCK = {
    "REDIS_URL": REDIS_URL,
    "SERVICE": {"BACKEND": "progrock.services.http.HttpTaskService",
                "OPTIONS": {"url": os.environ.get("PROGROCK_BACKEND_URL", "http://127.0.0.1:8001")}},
    "KINDS": ["rock"],
    "DEFAULT_KIND": "rock",
}
""",
    "mysite/index.html": "{% load progrock %}<!doctype html><title>t</title>"
    '{% progrock_bar kind="rock" %}',
    "mysite/urls.py": """
from django.shortcuts import render
from django.urls import path
urlpatterns = [path("", lambda request: render(request, "index.html"))]
""",
    "mysite/asgi.py": """
import os
from django.core.asgi import get_asgi_application
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from progrock import routing  # noqa: E402
application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": URLRouter(routing.websocket_urlpatterns),
    "channel": ChannelNameRouter(routing.channel_routing()),
})
""",
}


def stop_and_check(up: Up, send: Callable[[], None]) -> None:
    children = up.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in children)
    for part in ("redis-server", "progrock.local.backend", "rundelay", "runprogrock", "daphne"):
        assert part in names, f"no {part} among the children of progrock up: {names}"
    send()
    assert up.wait_exit() == 0, up.text()
    assert_all_gone([*children, *up.seen.values()], up.text())


def test_up_serves_the_page_and_stops_everything_on_sigterm(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """`progrock up` runs the stack, serves /, and on SIGTERM stops every child and exits 0."""
    data = tmp_path / "data"
    up = run_up("--port", "0", "--data-dir", str(data))
    url = up.wait_up()
    assert get(url + "/") == 200
    scripts = page_scripts(url + "/")
    assert scripts, "the demo page has no script"
    assert all(get(url + src) == 200 for src in scripts), scripts
    assert (data / "db.sqlite3").exists()
    assert (data / "redis").is_dir()
    stop_and_check(up, lambda: os.kill(up.proc.pid, signal.SIGTERM))
    assert "progrock | stopped" in up.text()


def test_up_serves_the_static_files_of_a_project_that_does_not(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """With a tutorial project's asgi.py (no static handler) and DEBUG on, `progrock up`
    serves the page's scripts from the static finders, as runserver does."""
    project = tmp_path / "project"
    for name, text in _TUTORIAL_PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    up = run_up(
        *("--port", "0", "--data-dir", str(tmp_path / "data"), "--workers", "1"),
        *("--settings", "mysite.settings", "--pythonpath", str(project)),
    )
    url = up.wait_up()
    scripts = page_scripts(url + "/")
    assert "/static/progrock/progrock-bar.js" in scripts, scripts
    assert all(get(url + src) == 200 for src in scripts), scripts
    # Django's own log lines are printed once (Daphne's root handler and Django's
    # default console handler both printed them). The second 404 orders the output.
    for path in ("/first-missing", "/second-missing"):
        with pytest.raises(urllib.error.HTTPError):
            get(url + path)
    until(lambda: "Not Found: /second-missing" in up.text(), 15, "the second 404's line")
    assert up.text().count("Not Found: /first-missing") == 1, up.text()


def test_ctrl_c_in_a_terminal_stops_everything_once(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """SIGINT to the whole foreground process group (Ctrl-C) stops every child and exits 0."""
    up = run_up("--port", "0", "--data-dir", str(tmp_path / "data"), "--workers", "1")
    up.wait_up()
    stop_and_check(up, lambda: os.killpg(up.proc.pid, signal.SIGINT))
    assert up.text().count("SIGINT: stopping") == 1, up.text()
    assert "killing" not in up.text(), up.text()


def test_sigterm_during_startup_leaves_no_child(run_up: Callable[..., Up], tmp_path: Path) -> None:
    """SIGTERM while `progrock up` is still starting stops what it started and exits 0."""
    up = run_up("--port", "0", "--data-dir", str(tmp_path / "data"))
    until(lambda: any(line.startswith("migrate ") for line in up.lines), STARTUP, "migrate")
    os.kill(up.proc.pid, signal.SIGTERM)
    assert up.wait_exit() == 0, up.text()
    assert up.seen, "no child was observed before the signal"
    assert_all_gone(list(up.seen.values()), up.text())


def test_up_refuses_a_port_in_use(run_up: Callable[..., Up], tmp_path: Path) -> None:
    """A busy --port fails startup at once, non-zero, naming the port, leaving nothing behind."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = run_up("--port", str(port), "--data-dir", str(tmp_path / "data"))
        assert up.wait_exit() != 0
    assert f"cannot listen on 127.0.0.1:{port}" in up.text(), up.text()


def test_up_refuses_a_settings_module_it_cannot_find(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """An unfindable --settings: one line naming the module, the folders, --pythonpath; exit 2,
    before any process starts."""
    data, project = tmp_path / "data", tmp_path / "project"
    up = run_up(
        *("--port", "0", "--data-dir", str(data)),
        *("--settings", "mysite.settings", "--pythonpath", str(project)),
    )
    assert up.wait_exit() == 2, up.text()
    assert up.lines == [
        "progrock up: cannot import the settings module 'mysite.settings': "
        f"ModuleNotFoundError: No module named 'mysite' (looked in {project} and the "
        "installed packages; give the project's folder with --pythonpath DIR)"
    ]
    assert not (data / "redis").exists()


def test_up_reports_a_settings_module_that_fails_to_import(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """A --settings module that raises: one line with the module and its error; exit 2."""
    package = tmp_path / "project" / "broken"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("raise RuntimeError('SECRET_KEY is not set')\n")
    up = run_up(
        *("--port", "0", "--data-dir", str(tmp_path / "data")),
        *("--settings", "broken.settings", "--pythonpath", str(package.parent)),
    )
    assert up.wait_exit() == 2, up.text()
    assert up.lines == [
        "progrock up: cannot import the settings module 'broken.settings': "
        "RuntimeError: SECRET_KEY is not set"
    ]


def test_a_crashed_worker_is_restarted(make_stack: Callable[..., Stack]) -> None:
    """A worker that dies unexpectedly is started again and the supervisor logs it."""
    stack = make_stack(workers=1)
    old = stack.pids()["worker-1"]
    os.kill(old, signal.SIGKILL)
    until(lambda: stack.pids().get("worker-1", old) != old, 30, "a new worker-1")
    assert any("restarting worker-1" in line for line in stack.output("progrock"))


def test_killed_through_the_api_stays_down_until_restart(
    make_stack: Callable[..., Stack],
) -> None:
    """Stack.kill() keeps a child down; Stack.restart() brings it back ready."""
    stack = make_stack(workers=1)
    old = stack.pids()["delay"]
    stack.kill("delay")
    until(lambda: not psutil.pid_exists(old) or _zombie(old), 10, "delay to die")
    assert "delay" not in stack.pids()
    stack.restart("delay")
    assert stack.pids()["delay"] != old
    stack.restart("web")
    assert get(stack.url + "/") == 200


def test_redis_data_survives_a_restart_of_the_stack(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """The private Redis persists to the data dir, so a new stack there sees the old keys."""
    data = tmp_path / "data"
    first = make_stack(data_dir=data, workers=1)
    client = redis.Redis.from_url(first.redis_url)
    client.zadd("progrock:e2e-survivor", {"member": 1.0})
    client.close()
    first.stop()
    second = make_stack(data_dir=data, workers=1)
    client = redis.Redis.from_url(second.redis_url)
    try:
        assert client.zscore("progrock:e2e-survivor", "member") == 1.0
    finally:
        client.close()


def test_a_second_up_on_a_data_dir_in_use_exits_at_once(
    run_up: Callable[..., Up], make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """A second `progrock up` on the data dir of a running stack: exit 2 before starting
    any child, one line naming the other process's pid and --data-dir; the running
    stack is untouched."""
    first = make_stack(data_dir=tmp_path / "data", workers=1)
    before = first.pids()
    up = run_up("--port", "0", "--data-dir", str(first.data_dir))
    assert up.wait_exit() == 2, up.text()
    assert up.lines == [
        f"progrock up: the data dir {first.data_dir} is in use by another ProgRock stack "
        f"(pid {os.getpid()}); stop that one, or give this one another --data-dir"
    ]
    assert up.seen == {}, "started children before refusing"
    assert first.pids() == before
    assert get(first.url + "/") == 200


def test_several_web_processes_serve_the_site(make_stack: Callable[..., Stack]) -> None:
    """web_processes=2 runs two daphne processes on their own ports, both serving /."""
    stack = make_stack(workers=1, web_processes=2)
    assert len(stack.urls) == 2 and stack.urls[0] == stack.url
    assert {"web-1", "web-2"} <= set(stack.pids())
    for url in stack.urls:
        assert get(url + "/") == 200


def test_a_stack_can_use_an_existing_redis_and_backend(
    stack: Stack, make_stack: Callable[..., Stack]
) -> None:
    """Given redis_url and backend_url, a stack starts neither and passes them on."""
    second = make_stack(workers=1, redis_url=stack.redis_url, backend_url=stack.backend_url)
    assert "redis" not in second.pids() and "backend" not in second.pids()
    assert (second.redis_url, second.backend_url) == (stack.redis_url, stack.backend_url)
    assert get(second.url + "/") == 200


def test_shared_stack_urls(stack: Stack) -> None:
    """The shared stack exposes its web, WebSocket, Redis and backend addresses."""
    assert stack.ws_url == stack.url.replace("http://", "ws://") + "/prog/"
    assert stack.redis_url.startswith("redis://127.0.0.1:")
    assert stack.backend_url.startswith("http://127.0.0.1:")
    assert get(stack.url + "/") == 200


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
