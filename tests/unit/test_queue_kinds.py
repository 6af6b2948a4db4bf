"""Queue-backed kinds: the KINDS mapping, the routing decision and its system check.

The routing tests import real tasks (the demo's Celery ``export``, the queue
test project's django.tasks ``djsteps``); nothing is queued.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from progrock.conf import get_settings
from progrock.exceptions import ImproperlyConfigured, ProtocolError
from progrock.queues import routes
from progrock.queues.targets import Target, parse_target

EXPORT = "celery:progrock_demo.tasks.export"


def test_a_target_is_none_or_scheme_and_dotted_path() -> None:
    """None is the backend service; 'celery:' and 'tasks:' name a task; the rest is refused."""
    assert parse_target("rock", None) is None
    assert parse_target("export", EXPORT) == Target("celery", "progrock_demo.tasks.export")
    assert parse_target("r", "tasks:app.tasks.report") == Target("tasks", "app.tasks.report")
    for bad in ("rq:app.tasks.x", "celery:", "celery:notdotted", "app.tasks.x", 3):
        with pytest.raises(ValueError, match=r"the target of kind 'k' must be .*got"):
            parse_target("k", bad)


def test_kinds_as_a_mapping_gives_the_names_and_the_queue_targets() -> None:
    """KINDS {kind: target}: KINDS its names, KIND_TARGETS its queue kinds; a list still works."""
    with override_settings(PROGROCK={"KINDS": {"rock": None, "export": EXPORT}}):
        current = get_settings()
        assert current.KINDS == ("rock", "export")
        assert dict(current.KIND_TARGETS) == {"export": parse_target("export", EXPORT)}
    with override_settings(PROGROCK={"KINDS": ["rock"]}):
        assert get_settings().KINDS == ("rock",) and dict(get_settings().KIND_TARGETS) == {}


def test_a_malformed_target_is_a_settings_error_naming_the_kind() -> None:
    """KINDS {"export": "celery"}: ImproperlyConfigured naming the kind and the value."""
    with (
        override_settings(PROGROCK={"KINDS": {"export": "celery"}}),
        pytest.raises(ImproperlyConfigured, match=r"kind 'export' must be .*got 'celery'"),
    ):
        get_settings()


@override_settings(PROGROCK={"KINDS": {"rock": None, "export": EXPORT}})
def test_a_backend_kind_is_not_routed_and_a_celery_kind_is() -> None:
    """rock goes to the backend service (None); export to its Celery task, params bound."""
    assert routes.queued_for("rock", {}) is None
    queued = routes.queued_for("export", {"rows": 5})
    assert queued is not None and str(queued.target) == EXPORT


@override_settings(PROGROCK={"KINDS": {"export": EXPORT}})
def test_params_the_task_does_not_accept_are_invalid_field_naming_them() -> None:
    """A keyword the task lacks: invalid_field naming the parameter and the task."""
    with pytest.raises(ProtocolError) as raised:
        routes.queued_for("export", {"rowz": 5}, ref=3)
    assert raised.value.code == "invalid_field"
    assert "'rowz'" in raised.value.detail and EXPORT in raised.value.detail
    assert raised.value.context["ref"] == 3


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("celery:progrock_demo.tasks.missing", "cannot be imported"),
        ("celery:progrock_demo.settings.DEBUG", "is not a Celery task"),
        ("tasks:progrock_demo.tasks.export", "is not a django.tasks task"),
    ],
)
def test_a_target_that_cannot_run_is_unknown_kind_and_a_system_check_error(
    target: str, why: str
) -> None:
    """A missing task or one of the wrong queue: unknown_kind at start, progrock.E011 at check."""
    with override_settings(PROGROCK={"KINDS": {"rock": None, "broken": target}}):
        with pytest.raises(ProtocolError) as raised:
            routes.queued_for("broken", {})
        assert raised.value.code == "unknown_kind" and why in raised.value.detail
        assert "'broken'" in raised.value.detail
        with pytest.raises(SystemCheckError) as checked:
            call_command("check", "--tag", "progrock", stdout=io.StringIO(), stderr=io.StringIO())
    assert "progrock.E011" in str(checked.value) and why in str(checked.value)


@override_settings(PROGROCK={"KINDS": {"djsteps": "tasks:tests.e2e.queueproject.tasks.djsteps"}})
def test_a_django_tasks_kind_binds_params_without_its_reporter() -> None:
    """A with_progress task accepts its own parameters, not the reporter's."""
    pytest.importorskip("django_tasks_db")
    with override_settings(
        TASKS={"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    ):
        assert routes.queued_for("djsteps", {"n": 2}) is not None
        with pytest.raises(ProtocolError, match="progress"):
            routes.queued_for("djsteps", {"progress": 1})
