"""The public Python API, importable from the top-level package."""

from __future__ import annotations

import os
import subprocess
import sys

import progrock
from progrock import api, exceptions

NAMES = (
    "start_task",
    "astart_task",
    "report_progress",
    "areport_progress",
    "keep_alive",
    "akeep_alive",
    "is_cancelled",
    "ais_cancelled",
    "owner_for_request",
)


def test_every_public_name_is_the_api_s_own() -> None:
    """progrock.<name> is the very function or exception of progrock.api / exceptions."""
    for name in NAMES:
        assert getattr(progrock, name) is getattr(api, name)
    for name in ("Cancelled", "TooManyTasks", "TaskNotFound"):
        assert getattr(progrock, name) is getattr(exceptions, name)
    assert issubclass(progrock.Cancelled, exceptions.ProgRockError)


def test_importing_progrock_imports_no_models() -> None:
    """``import progrock`` and its exceptions work before Django is set up (no models loaded)."""
    code = (
        "import sys, progrock\n"
        "assert progrock.Cancelled.__name__ == 'Cancelled'\n"
        "assert 'progrock.models' not in sys.modules, 'models imported'\n"
        "assert 'progrock.api' not in sys.modules, 'api imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A misspelt name fails as any missing attribute does."""
    try:
        progrock.report_progres  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "report_progres" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
