"""deploy/: every recipe runs the commands of deploy/commands.toml, and says what it must.

The several-hosts test (tests/hosts/) starts its processes from that file;
these tests keep compose.yaml, the Procfile, the systemd units and the
Dockerfile in step with it. Docker images cannot be built or pulled on the
test machines: ``docker compose config`` validates compose.yaml where the
docker CLI and its compose plugin exist, and skips (saying so) elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import get_commands

from tests.recipes import (
    DEPLOY,
    ROOT,
    commands,
    compose_commands,
    procfile_commands,
    unit_commands,
    unit_settings,
)

KINDS = {"migrate", "collectstatic", "web", "worker", "delay", "backend"}
SYSTEMD = DEPLOY / "systemd"
# unit file -> (the instance its %i is documented with, the kinds of its ExecStart= lines)
UNITS = {
    "progrock-web@.service": ("8000", ["web"]),
    "progrock-worker@.service": ("1", ["worker"]),
    "progrock-delay.service": ("", ["delay"]),
    "progrock-backend.service": ("", ["backend"]),
    "progrock-migrate.service": ("", ["migrate", "collectstatic"]),
}


def test_commands_toml_names_every_kind_and_each_command_exists() -> None:
    """commands.toml has each process kind, and each names a module and command that exist."""
    table = commands()
    assert set(table) == KINDS
    django_commands = get_commands()
    for kind, argv in table.items():
        assert argv[:2] == ["python", "-m"], (kind, argv)
        module = argv[2]
        if module == "django":
            assert argv[3] in django_commands, f"{kind}: no manage.py command {argv[3]!r}"
        else:
            __import__(module)
    application = table["web"][-1]
    module, _, attribute = application.partition(":")
    assert attribute == "application"
    assert (ROOT / "example" / Path(*module.split("."))).with_suffix(".py").is_file(), module


def test_compose_services_run_the_commands() -> None:
    """compose.yaml: migrate, web, worker, delay and backend run commands.toml's argv."""
    table = commands()
    found = compose_commands()
    for kind in ("migrate", "web", "worker", "delay", "backend"):
        assert found.get(kind) == table[kind], kind


def compose() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_has_the_reference_topology() -> None:
    """Redis, PostgreSQL, web x2, worker x2, a delay server, the backend under a profile;
    every ProgRock service gets a stop grace period and the shared settings."""
    services = compose()["services"]
    assert {"redis", "postgres", "migrate", "web", "worker", "delay", "backend"} <= set(services)
    assert services["web"]["deploy"]["replicas"] >= 2
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["backend"]["profiles"] == ["backend"]
    for name in ("web", "worker", "delay", "backend"):
        assert "stop_grace_period" in services[name], name
    for name in ("migrate", "web", "worker", "delay", "backend"):
        env = services[name]["environment"]
        for variable in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
            assert variable in env, (name, variable)
    for name in ("web", "worker", "delay"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_procfile_runs_the_commands() -> None:
    """The Procfile's web, worker, delay and backend lines are commands.toml's."""
    table = commands()
    found = procfile_commands()
    assert set(found) == {"web", "worker", "delay", "backend"}
    for name, argv in found.items():
        assert argv == table[name], name


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_units_run_the_commands(unit: str) -> None:
    """Each unit's ExecStart= lines are commands.toml's; it runs as the progrock user in
    the data directory, with the shared environment file and a stop (or start) timeout."""
    instance, kinds = UNITS[unit]
    path = SYSTEMD / unit
    table = commands()
    assert unit_commands(path, instance) == [table[kind] for kind in kinds]
    settings = unit_settings(path)
    assert settings["User"] == ["progrock"]
    assert settings["WorkingDirectory"] == ["/var/lib/progrock"]
    assert settings["EnvironmentFile"] == ["/etc/progrock/progrock.env"]
    timeout = "TimeoutStartSec" if settings["Type"] == ["oneshot"] else "TimeoutStopSec"
    assert int(settings[timeout][0]) > 0, unit


def test_dockerfile_installs_the_wheel_as_a_non_root_user() -> None:
    """python slim, the wheel with its extras, a non-root user, the web command by default."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim\b", text, re.M)
    assert re.search(r"pip install .*\[local,postgres,speedups\]", text)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), users
    cmd = re.findall(r"^CMD (\[.*\])$", text, re.M)
    assert [json.loads(c) for c in cmd] == [commands()["web"]]


def nginx_blocks(text: str) -> dict[str, Any]:
    """A simple reading of an nginx file: ``{"directives": [...], "blocks": [(name, block)]}``."""
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};]+", re.sub(r"#.*", "", text))
    root: dict[str, Any] = {"directives": [], "blocks": []}
    stack = [root]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            block: dict[str, Any] = {"directives": [], "blocks": []}
            stack[-1]["blocks"].append((" ".join(words), block))
            stack.append(block)
            words = []
        elif token == ";":
            stack[-1]["directives"].append(words)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token.strip("'\""))
    return root


def locations(block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, inner in block["blocks"]:
        if name.startswith("location"):
            found[name.removeprefix("location").strip()] = inner
        found.update(locations(inner))
    return found


def headers(location: dict[str, Any]) -> dict[str, str]:
    return {d[1].lower(): d[2] for d in location["directives"] if d[0] == "proxy_set_header"}


def directive(location: dict[str, Any], name: str) -> list[str] | None:
    return next((d[1:] for d in location["directives"] if d[0] == name), None)


def test_nginx_site_upgrades_sockets_and_forwards_the_client() -> None:
    """The socket location upgrades (HTTP/1.1, Upgrade, Connection) with hour-long timeouts;
    every proxied location sets Host and X-Forwarded-For/Proto/Host itself (nginx
    inherits none once a location sets one); static files are served from STATIC_ROOT."""
    found = locations(nginx_blocks((DEPLOY / "nginx" / "progrock.conf").read_text()))
    socket = found["= /prog/"]
    assert directive(socket, "proxy_http_version") == ["1.1"]
    assert headers(socket)["upgrade"] == "$http_upgrade"
    assert headers(socket)["connection"] == "$connection_upgrade"
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        value = directive(socket, timeout)
        assert value is not None and int(value[0].removesuffix("s")) >= 3600, timeout
    proxied = {name: loc for name, loc in found.items() if directive(loc, "proxy_pass")}
    assert set(proxied) == {"= /prog/", "/"}
    for name, loc in proxied.items():
        sent = headers(loc)
        assert sent.get("host") == "$http_host", name
        assert sent.get("x-forwarded-for") == "$remote_addr", name  # overwritten, not appended
        assert sent.get("x-forwarded-proto") == "$scheme", name
        assert sent.get("x-forwarded-host") == "$host", name
    assert directive(found["/static/"], "alias") == ["/var/lib/progrock/static/"]


def test_the_environment_file_names_every_setting_the_recipes_need() -> None:
    """deploy/progrock.env sets every variable compose.yaml gives the ProgRock services."""
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "progrock.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    wanted = set(compose()["services"]["web"]["environment"])
    assert wanted <= set(env), wanted - set(env)


def docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    done = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    return [docker, "compose"] if done.returncode == 0 else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """``docker compose config`` accepts compose.yaml and renders commands.toml's commands."""
    command = docker_compose()
    if command is None:
        pytest.skip(
            "compose.yaml not validated: no `docker compose` here (docker CLI with the "
            "compose plugin); the other tests of this file still check its commands"
        )
    env = {
        **os.environ,
        "DJANGO_SECRET_KEY": "x" * 50,
        "POSTGRES_PASSWORD": "secret",
    }
    config = ["-f", str(DEPLOY / "compose.yaml"), "--profile", "backend", "config"]
    done = subprocess.run(
        [*command, *config, "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    table = commands()
    for kind in ("migrate", "web", "worker", "delay", "backend"):
        assert services[kind]["command"] == table[kind], kind


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds no unknown key or bad value in any unit (copies with
    this interpreter for /opt/progrock/venv/bin/python, templates as web@8000, worker@1)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd units not verified: no systemd-analyze here")
    copies = []
    for unit, (instance, _) in UNITS.items():
        text = (SYSTEMD / unit).read_text().replace("/opt/progrock/venv/bin/python", sys.executable)
        copy = tmp_path / unit.replace("@.", f"@{instance}.")
        copy.write_text(text)
        copies.append(str(copy))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
