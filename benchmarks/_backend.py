"""When the reference backend created each task of a run: where its steps start.

A rock task's step ``k`` happens at its backend ``k * interval`` after the task
was created there, so the created time is what freshness is counted from
(``_stats.py``). ProgRock sends its task id as the create's idempotency key
(docs/backend.md, 2.2), so ``POST /tasks/batch`` with those keys, and no
``kind``, answers each task the run created (200) with its ``created_at``; a
key the backend does not know is refused (400, no ``kind``), never created.

The backend's ``created_at`` is Unix time; the load generator times arrivals
with ``time.monotonic()``, a clock every process on the machine shares.
:func:`attach_origins` moves one onto the other.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

MAX_BATCH = 1000  # the backend's most creates per call


def _post(url: str, body: dict[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def created_at(
    backend_url: str, task_ids: Iterable[str], timeout: float = 30.0
) -> dict[str, float]:
    """Task id -> the backend's ``created_at`` (Unix time) of every id it knows."""
    ids = list(dict.fromkeys(task_ids))
    found: dict[str, float] = {}
    for first in range(0, len(ids), MAX_BATCH):
        chunk = ids[first : first + MAX_BATCH]
        answer = _post(
            backend_url.rstrip("/") + "/tasks/batch",
            {"tasks": [{"idempotency_key": task_id} for task_id in chunk]},
            timeout,
        )
        entries = answer.get("tasks") if isinstance(answer, dict) else None
        if not isinstance(entries, list) or len(entries) != len(chunk):
            raise RuntimeError(
                f"POST /tasks/batch must answer {len(chunk)} entries, got {answer!r:.300}"
            )
        for task_id, entry in zip(chunk, entries, strict=True):
            if isinstance(entry, dict) and entry.get("status") == 200:
                found[task_id] = float(entry["task"]["created_at"])
    return found


def wall_minus_monotonic() -> float:
    """Unix time less ``time.monotonic()``, now (of three reads, the tightest)."""
    reads = []
    for _ in range(3):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        reads.append((after - before, wall - (before + after) / 2))
    return min(reads)[1]


def attach_origins(tasks: list[dict[str, Any]], created: dict[str, float], offset: float) -> int:
    """Set ``origin`` (creation, on the monotonic clock) on each task whose id is in
    ``created``, ``offset`` being :func:`wall_minus_monotonic`; return how many."""
    count = 0
    for task in tasks:
        at = created.get(task.get("task_id") or "")
        if at is not None:
            task["origin"] = at - offset
            count += 1
    return count
