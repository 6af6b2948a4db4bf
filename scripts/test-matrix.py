"""Run the unit and Redis suites on the other supported Pythons: ``make test-matrix``.

``make test`` covers the main combination (Python 3.11, the pins of
``constraints.txt``). This covers the rest of the supported matrix where the
interpreters exist (pyenv's, found with ``pyenv prefix VERSION``: the bare
``python3.13`` shim refuses when that version is not selected):

* Python 3.12 with the pins of ``constraints.txt`` (Django 5.2 LTS, redis-py 7);
* Python 3.13 with the newest allowed majors: Django 6.x and redis-py 8.x,
  plus the end-to-end tests a new project meets first: the tutorial followed
  verbatim (real processes, a task to 100 %) and the socket pipeline. The
  whole end-to-end suite there would double CI's time.

A missing interpreter is skipped with a loud line, never failed, so the
target passes on a machine with Python 3.11 only. Each combination gets its
own virtual environment (``.venv-matrix/NAME``), reused while ``pyproject.toml``,
``constraints.txt`` and the combination are unchanged.

    python scripts/test-matrix.py [NAME ...] [-- PYTEST ARGS]
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".venv-matrix"
SUITES = ["tests/unit", "tests/redis"]


@dataclass(frozen=True)
class Combination:
    name: str
    python: str
    """A version prefix: the newest pyenv version starting with it is used."""
    overrides: dict[str, str] = field(default_factory=dict)
    """Requirement lines replacing the pins of these distributions in constraints.txt."""
    extra: tuple[str, ...] = ()
    """Test paths run there besides :data:`SUITES`."""


COMBINATIONS = [
    Combination("py3.12", "3.12"),
    Combination(
        "py3.13-newest",
        "3.13",
        {"django": "Django>=6.0,<7", "redis": "redis>=8.0,<9", "django-stubs": ""},
        ("tests/e2e/test_tutorial.py", "tests/e2e/test_pipeline.py"),
    ),
]


def find_python(prefix: str) -> str | None:
    """The interpreter of the newest pyenv version ``prefix`` or ``prefix.N``, if installed."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    pyenv = shutil.which("pyenv") or next(
        (str(p) for p in [root / "bin" / "pyenv"] if os.access(p, os.X_OK)), None
    )
    if pyenv is None:
        return None
    listed = subprocess.run(
        [pyenv, "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    pattern = re.compile(rf"^{re.escape(prefix)}(\.\d+)?$")
    versions = sorted(
        (v for v in listed if pattern.match(v)),
        key=lambda v: tuple(int(p) for p in v.split(".")),
    )
    for version in reversed(versions):
        found = subprocess.run(
            [pyenv, "prefix", version], capture_output=True, text=True, check=False
        )
        python = Path(found.stdout.strip()) / "bin" / "python3"
        if found.returncode == 0 and python.exists():
            return str(python)
    return None


def constraints_for(combo: Combination) -> str:
    """constraints.txt with the combination's overrides applied."""
    lines = []
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name = re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].strip().lower().replace("_", "-")
        if name not in combo.overrides:
            lines.append(line)
    lines += [req for req in combo.overrides.values() if req]
    return "\n".join(lines) + "\n"


def prepare(combo: Combination, python: str) -> Path:
    """The combination's venv with ``.[dev]`` installed (created or reused)."""
    venv = VENVS / combo.name
    constraints = constraints_for(combo)
    digest = hashlib.sha256(
        "\0".join([python, (ROOT / "pyproject.toml").read_text(), constraints]).encode()
    ).hexdigest()
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == digest:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    (venv / "constraints.txt").write_text(constraints)
    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(venv / "constraints.txt"), "-e", ".[dev]"],
        cwd=ROOT,
        check=True,
    )
    stamp.write_text(digest)
    return venv


def versions(venv: Path) -> str:
    code = (
        "import sys, django, redis, channels, channels_redis;"
        "print(f'Python {sys.version.split()[0]}, Django {django.__version__}, "
        "redis-py {redis.__version__}, channels {channels.__version__}, "
        "channels_redis {channels_redis.__version__}')"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def main(argv: list[str]) -> int:
    names, pytest_args = argv, []
    if "--" in argv:
        cut = argv.index("--")
        names, pytest_args = argv[:cut], argv[cut + 1 :]
    unknown = set(names) - {c.name for c in COMBINATIONS}
    if unknown:
        known = ", ".join(c.name for c in COMBINATIONS)
        print(f"test-matrix: unknown combination {sorted(unknown)}; known: {known}")
        return 2
    results: list[tuple[str, str]] = []
    began = time.monotonic()
    for combo in COMBINATIONS:
        if names and combo.name not in names:
            continue
        python = find_python(combo.python)
        if python is None:
            line = f"SKIP {combo.name}: no Python {combo.python} (pyenv prefix {combo.python}.x)"
            print(f"\n{'!' * 72}\n!!! {line}\n{'!' * 72}", flush=True)
            results.append((combo.name, "SKIPPED (no interpreter)"))
            continue
        started = time.monotonic()
        print(f"\n=== {combo.name}: preparing {VENVS.name}/{combo.name} ({python})", flush=True)
        venv = prepare(combo, python)
        print(f"=== {combo.name}: {versions(venv)}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            *SUITES,
            *combo.extra,
            "-q",
            *pytest_args,
        ]
        code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        took = time.monotonic() - started
        verdict = "passed" if code == 0 else f"FAILED (pytest exit {code})"
        results.append((combo.name, f"{verdict} in {took:.0f} s"))
    print(f"\ntest-matrix ({time.monotonic() - began:.0f} s):")
    for name, verdict in results:
        print(f"  {name}: {verdict}")
    return 1 if any("FAILED" in v for _, v in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
