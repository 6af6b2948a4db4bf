"""``progrock.metrics``: bounded labels, ``--metrics-port`` values, and life without
``prometheus-client`` (run in a child Python where the library cannot be imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.test import override_settings

from progrock import metrics
from progrock.exceptions import ProgRockError, ServiceError, ServiceRejected
from progrock.local.redis_server import free_port
from progrock.services.http import HttpTaskService
from progrock.services.metered import MeteredService

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_kind_outside_kinds_is_other() -> None:
    """With ``KINDS`` set, a kind it does not list never becomes a label of its own."""
    with override_settings(PROGROCK={"KINDS": ("rock", "hash")}):
        assert metrics.kind_label("rock") == "rock"
        assert metrics.kind_label("user-supplied-123") == "other"


def test_without_kinds_at_most_fifty_kinds_get_labels() -> None:
    """With ``KINDS`` None the first kinds seen keep their name, later ones are ``other``."""
    with override_settings(PROGROCK={"KINDS": None}):
        labels = {metrics.kind_label(f"kind-{i}") for i in range(200)}
    assert len(labels) <= metrics.MAX_KIND_LABELS + 1 and "other" in labels


def test_error_labels_are_progrock_codes_or_other() -> None:
    """An ended task's error becomes its code if ProgRock's own, else ``other``/``none``."""
    assert metrics.error_label(None) == "none"
    assert metrics.error_label({"code": "lost", "detail": "x"}) == "lost"
    assert metrics.error_label({"code": "my code from a user"}) == "other"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("9100", ("0.0.0.0", 9100)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9", ("::1", 9))],
)
def test_metrics_port_values(text: str, expected: tuple[str, int]) -> None:
    """``--metrics-port`` takes PORT or HOST:PORT."""
    assert metrics.parse_address(text) == expected


def test_a_bad_metrics_port_is_one_line_quoting_it() -> None:
    """A port out of range is refused, quoting the value."""
    with pytest.raises(ProgRockError, match=r"--metrics-port .*got '70000'"):
        metrics.serve("worker", "70000")


async def test_metered_service_counts_an_unreachable_backend() -> None:
    """A refused connection is timed and counted as ``unavailable`` for its call."""
    metrics.mark_process("worker")  # the worker's series join the registry
    service = MeteredService(HttpTaskService(url=f"http://127.0.0.1:{free_port()}", timeout=2))
    before = sample("progrock_backend_errors_total", call="status", error="unavailable")
    count = sample("progrock_backend_seconds_count", call="status")
    try:
        with pytest.raises(ServiceError):
            await service.status_many(["r-1"])
    finally:
        await service.aclose()
    assert sample("progrock_backend_errors_total", call="status", error="unavailable") == before + 1
    assert sample("progrock_backend_seconds_count", call="status") == count + 1
    assert hasattr(service, "create_many")  # the HTTP service has one: so has the wrapper


def test_metered_error_kinds() -> None:
    """Rejected, unavailable and anything else are told apart."""
    from progrock.services.metered import error_kind

    assert error_kind(ServiceRejected("no")) == "rejected"
    assert error_kind(ServiceError("down")) == "unavailable"
    assert error_kind(KeyError("bug")) == "exception"


# -- without prometheus-client ----------------------------------------------------------

WITHOUT = """
import sys
sys.modules["prometheus_client"] = None  # `import prometheus_client` raises ImportError
"""


def run_without_library(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example")]),
    }
    script = WITHOUT + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def test_without_the_library_every_metric_is_a_no_op() -> None:
    """Counters, gauges and histograms take calls and record nothing; AVAILABLE is False."""
    done = run_without_library(
        """
        import json
        from progrock import metrics
        metrics.TASKS_STARTED.labels("rock").inc()
        metrics.TASKS_ENDED.labels("failed", "lost").inc(2)
        metrics.POLL_LATENESS.observe(0.1)
        metrics.DELAY_PENDING.set(3)
        metrics.web.updates_pushed += 1
        metrics.mark_process("worker")
        print(json.dumps({"available": metrics.AVAILABLE}))
        """
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"available": False}


def test_without_the_library_the_view_is_501_and_check_warns() -> None:
    """The demo includes the view: it answers 501 naming the extra; check says W005."""
    done = run_without_library(
        """
        import io, json, django
        django.setup()
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import setup_test_environment
        setup_test_environment()
        out = io.StringIO()
        call_command("check", stdout=out, stderr=out)
        response = Client().get("/metrics")
        print(json.dumps({"check": out.getvalue(), "status": response.status_code,
                          "body": response.content.decode()}))
        """
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert "progrock.W005" in found["check"]
    assert found["status"] == 501
    assert 'pip install "django-progrock[metrics]"' in found["body"]


def test_with_the_library_check_does_not_warn() -> None:
    """The same URLconf with prometheus-client installed: no W005."""
    from django.core.checks import run_checks

    assert not [m for m in run_checks() if m.id == "progrock.W005"]


def test_without_the_library_rundelay_metrics_port_stops_in_one_line(tmp_path: Path) -> None:
    """``rundelay --metrics-port`` without the library exits at once naming the extra."""
    done = run_without_library(
        """
        import sys
        from django.core.management import execute_from_command_line
        execute_from_command_line(["manage.py", "rundelay", "--metrics-port", "0"])
        """
    )
    assert done.returncode != 0
    assert 'needs prometheus-client: pip install "django-progrock[metrics]"' in done.stderr
    assert "Traceback" not in done.stderr
