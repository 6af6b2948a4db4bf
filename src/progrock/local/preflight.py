"""Checks ``progrock up`` makes before it starts anything, each failing with one clear line.

A settings module that cannot be imported would otherwise surface as the
``migrate`` child's traceback after Redis and the backend had started; a
missing web server as a web process that crashes at every restart.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path

from progrock.exceptions import ProgRockError

PROBE_TIMEOUT = 60.0
# Run in a child with the environment and folder of the stack's Django
# processes: the settings module is imported exactly as they will import it.
_PROBE = """\
import importlib, json, sys
try:
    importlib.import_module(sys.argv[1])
except BaseException as exc:
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "missing": missing}))
    sys.exit(3)
"""


class SettingsNotImportable(ProgRockError):
    """The Django settings module given to ``progrock up`` does not import."""


def check_web_server(server: str) -> None:
    """Raise if the ASGI server ``server`` is not installed, naming the extra that brings it."""
    extra = {"daphne": "local", "uvicorn": "uvicorn"}.get(server)
    if extra is not None and find_spec(server) is None:
        install = f'pip install "django-progrock[{extra}]"'
        raise ProgRockError(f"--server {server} needs {server}, not installed: {install}")


def check_settings(
    settings: str,
    *,
    python: str,
    env: Mapping[str, str],
    cwd: Path,
    pythonpath: Sequence[str],
    demo: bool = False,
) -> None:
    """Import ``settings`` in a child as the stack's processes will; raise if it fails.

    The message is one line: the module, the reason, and where it was looked
    for when the module (or its package) was not found. ``demo``: the
    module is the example project's, which only a source checkout has.
    """
    try:
        done = subprocess.run(
            [python, "-c", _PROBE, settings],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SettingsNotImportable(
            f"importing the settings module {settings!r} took over {PROBE_TIMEOUT:g} s"
        ) from None
    if done.returncode == 0:
        return
    error, missing = _reason(done)
    error = " ".join(error.splitlines())
    message = f"cannot import the settings module {settings!r}: {error}"
    if missing is not None and _names_part_of(missing, settings):
        if demo:
            message += (
                "; the demo project is in a source checkout's example/ folder: "
                "run your own project with --settings (and --pythonpath)"
            )
        else:
            where = f"{', '.join(pythonpath)} and " if pythonpath else ""
            message += (
                f" (looked in {where}the installed packages; "
                "give the project's folder with --pythonpath DIR)"
            )
    raise SettingsNotImportable(message)


def _reason(done: subprocess.CompletedProcess[str]) -> tuple[str, str | None]:
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except ValueError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("error"), str):
        missing = found.get("missing")
        return found["error"], missing if isinstance(missing, str) else None
    # The child died before it could report (a crash in C, a signal).
    tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return tail, None


def _names_part_of(missing: str, module: str) -> bool:
    """Whether ``missing`` is ``module`` or one of its parent packages."""
    return module == missing or module.startswith(missing + ".")
