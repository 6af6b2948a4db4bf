"""Start watchdogs: a start that no worker carries through is forwarded again.

Channels' workers take messages from the channel layer eagerly, so a worker
killed between taking a start and the task running loses it. Each forwarded
start therefore has a *watchdog*: a delayed copy of the start message (its
next attempt) in the delay store, keyed ``start:<task_id>`` and due
``START_TIMEOUT`` seconds later.

* The web process arms it just before forwarding the start (so no worker
  can act on a start that has none), and drops it if the send fails.
* The worker that takes the start re-arms it (the timer starts again) and
  disarms it once the task runs, has ended, or was refused. A start that
  meets a backend error schedules its retry under the same key, which
  replaces the watchdog.
* A watchdog that fires forwards the start again. Attempts are idempotent:
  every start message carries a ``nonce`` and a worker claims each message
  once by it (channels_redis's own layer can deliver one message twice), so any number
  of attempts, in any order, are each acted on once; a row that is no
  longer ``queued`` is not started again; and the backend gets the task id
  as its idempotency key.
* A start refused for the owner's limit leaves a marker in Redis, so a later
  attempt does not start it after the client was told ``too_many_tasks``.
* A lost start counts as lost from the moment its first watchdog fires
  (``lost_since``): once ``FAILURE_BUDGET`` seconds have passed since, the
  next attempt fails the task (``not_started``) instead of trying again,
  unless the task left ``queued`` meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from progrock.conf import progrock_settings
from progrock.delay import DelayStore
from progrock.protocol import WORKER_CHANNEL


def watch_key(task_id: str) -> str:
    """The delay-store key of a task's start watchdog (and of its start retries)."""
    return f"start:{task_id}"


def nonce() -> str:
    """A fresh id for one start message: each message is claimed once by it."""
    return uuid.uuid4().hex


def next_attempt(message: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The start message a watchdog armed at ``now`` delivers: the next attempt.

    It has a new ``nonce`` (so it is claimed apart from every earlier message
    of the start) and ``lost_since``: kept from an earlier loss, else the
    time the watchdog fires (the start counts as lost from then on).
    """
    lost = message.get("lost_since") or now + progrock_settings.START_TIMEOUT
    content = {k: v for k, v in message.items() if k != "starts"}
    return {
        **content,
        "attempt": int(message.get("attempt") or 0) + 1,
        "nonce": nonce(),
        "lost_since": lost,
    }


def watchdogs(messages: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """Delay-store envelopes of the watchdogs of start messages (``{"task_id", ...}``)."""
    delay_ms = progrock_settings.START_TIMEOUT * 1000
    return [
        {
            "channel": WORKER_CHANNEL,
            "content": next_attempt(message, now),
            "delay": delay_ms,
            "key": watch_key(str(message["task_id"])),
            "merge": False,
        }
        for message in messages
    ]


async def arm(delay: DelayStore, messages: Iterable[Mapping[str, Any]]) -> None:
    """Arm (or re-arm) the watchdogs of start messages, in one round trip."""
    envelopes = watchdogs(messages, time.time())
    if envelopes:
        await delay.schedule_many(envelopes)


async def disarm(delay: DelayStore, task_ids: Iterable[str]) -> None:
    """Drop the watchdogs of tasks that run, ended or were refused, in one round trip."""
    await delay.cancel([watch_key(task_id) for task_id in task_ids])


def budget_spent(message: Mapping[str, Any], now: float) -> bool:
    """Whether a start has been lost (watchdogs firing) for longer than FAILURE_BUDGET.

    Backend errors have their own budget (``first_failure``, in
    :mod:`progrock.worker.starts`): an attempt that retries a backend error still
    calls the backend, so a backend that came back starts the task.
    """
    lost = message.get("lost_since")
    if not lost:
        return False
    return now - float(lost) > progrock_settings.FAILURE_BUDGET


def claim_key(prefix: str, task_id: str, claim_id: str) -> str:
    """Redis key a worker sets (NX) to claim one start message by its nonce."""
    return f"{prefix}start:{task_id}:{claim_id}"


def refused_key(prefix: str, task_id: str) -> str:
    """Redis key marking a start refused (owner limit): later attempts must not start it."""
    return f"{prefix}start:{task_id}:refused"
