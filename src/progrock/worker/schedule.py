"""Scheduling poll ticks: the one place a task's next poll is put in the delay store.

Starts schedule a new task's first tick, polls each polled task's next one,
the sweep the tick of a chain it re-armed. A task's tick counts only if it is
the task's next due tick (its ``nd`` field, claimed atomically in
:meth:`progrock.state.live.TaskStore.claim`), so poll chains need no
per-task key: a duplicated or outdated tick is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from progrock.delay.store import now_ms
from progrock.worker.context import Worker
from progrock.worker.ticks import Tick

#: The message type of a batch of due ticks (``{"type": POLL, "ticks": [[task_id, due_ms], ...]}``).
POLL = "progrock.poll"


async def schedule_ticks(worker: Worker, ticks: Sequence[Tick]) -> None:
    """Schedule ticks as few delayed messages: one per due time (and ``TICK_BATCH`` ticks),
    in one round trip; each is delivered when due (merged by the delay server with
    others due then)."""
    if not ticks:
        return
    groups: dict[float, list[list[Any]]] = {}
    for t in ticks:
        groups.setdefault(t.due_ms, []).append([t.task_id, t.due_ms])
    batch, channel, now = worker.cadence.batch, worker.cadence.channel, now_ms()
    await worker.delay.schedule_many(
        [
            {
                "channel": channel,
                "content": {"type": POLL, "ticks": items[i : i + batch]},
                "delay": max(0.0, due - now),
                "merge": True,
            }
            for due, items in groups.items()
            for i in range(0, len(items), batch)
        ]
    )
    if worker.delay_watch is not None:
        # Logs once when no delay server beats: the ticks would wait for ever.
        worker.delay_watch.check()
