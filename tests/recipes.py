"""The deploy recipes' process commands, read the way each recipe's runner reads them.

``deploy/commands.toml`` is the one list (kind -> argv); compose.yaml, the
Procfile and the systemd units spell the same commands in their own formats.
Each reader here returns argv lists normalised the same way: the Python
interpreter is ``python`` whatever its path, and a recipe's own variable
takes the value the recipe documents (systemd's ``%i``: the instance name;
the Procfile's ``${PORT:-8000}``: its default).
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
_PYTHON = re.compile(r"(^|/)python(3(\.\d+)?)?$")
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def commands() -> dict[str, list[str]]:
    """``deploy/commands.toml``: each process kind's argv."""
    table = tomllib.loads((DEPLOY / "commands.toml").read_text())
    found: dict[str, list[str]] = {}
    for kind, entry in table.items():
        argv = entry.get("argv") if isinstance(entry, dict) else None
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ValueError(
                f"commands.toml: [{kind}] argv must be a list of strings, got {argv!r}"
            )
        found[kind] = argv
    return found


def here(argv: list[str]) -> list[str]:
    """``argv`` run with this interpreter (``python`` -> ``sys.executable``)."""
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def normalise(argv: list[str]) -> list[str]:
    """Any Python interpreter's path spelled ``python``."""
    return ["python" if _PYTHON.search(argv[0]) else argv[0], *argv[1:]] if argv else argv


def compose_commands(path: Path = DEPLOY / "compose.yaml") -> dict[str, list[str]]:
    """Each compose service's ``command`` (list form only), by service name."""
    import yaml

    services: dict[str, Any] = yaml.safe_load(path.read_text())["services"]
    found: dict[str, list[str]] = {}
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            continue
        if not isinstance(command, list):
            raise ValueError(f"compose service {name!r}: command must be a list, got {command!r}")
        found[name] = normalise([str(part) for part in command])
    return found


def procfile_commands(path: Path = DEPLOY / "Procfile") -> dict[str, list[str]]:
    """Each Procfile line's command, ``${VAR:-default}`` taking its default."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep:
            raise ValueError(f"Procfile: expected 'name: command', got {line!r}")
        found[name.strip()] = normalise(shlex.split(_DEFAULTED.sub(r"\2", command)))
    return found


def unit_commands(path: Path, instance: str = "") -> list[list[str]]:
    """A systemd unit's ``ExecStart=`` commands, ``%i`` being ``instance``."""
    found: list[list[str]] = []
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ExecStart":
            found.append(normalise(shlex.split(value.replace("%i", instance))))
    return found


def unit_settings(path: Path) -> dict[str, list[str]]:
    """A systemd unit's ``Key=value`` lines (every value of a repeated key)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found
