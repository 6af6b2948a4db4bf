"""benchmarks/_backend.py against the real reference backend: created times by key."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

from benchmarks._backend import created_at

from progrock.local.backend.testing import BackendProcess


def call(url: str, method: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_created_times_are_found_by_key_and_unknown_keys_create_nothing(
    backend: BackendProcess,
) -> None:
    """Each key a create used answers that task's created_at; an unknown key is
    left out and does not make the backend create a task."""
    keys = [uuid.uuid4().hex for _ in range(3)]
    made = {
        key: call(backend.url + "/tasks", "POST", {"kind": "rock", "idempotency_key": key})
        for key in keys
    }
    held = call(backend.url + "/health", "GET")["tasks"]
    unknown = uuid.uuid4().hex
    found = created_at(backend.url, [*keys, unknown, keys[0]])
    assert found == {key: made[key]["created_at"] for key in keys}
    assert call(backend.url + "/health", "GET")["tasks"] == held
