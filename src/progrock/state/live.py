"""Live task state in Redis, and the one atomic way to change and announce it.

Each task has a hash ``<prefix>t:<task_id>`` with its live state, read
through :class:`LiveState`. Every announced change goes through
:data:`~progrock.state.scripts.APPLY_LUA`, which in one atomic step refuses
anything after a terminal state, keeps progress from going backwards,
increments the task's ``seq``, stores the new fields and publishes the message
on ``<prefix>u:<task_id>`` as ``"<seq> <flag> <json>"`` for the web processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from progrock.conf import progrock_settings
from progrock.protocol import Status, TaskView, clamp_progress, flag_for, frame_parts
from progrock.state.scripts import (
    APPLY_LUA,
    CLAIM_LUA,
    INIT_QUEUED_LUA,
    LAST_POLL,
    NEXT_DUE,
    OVERDUE_LUA,
    POLL_FIELDS,
    REARM_LUA,
    STATUS_DIFFERS_LUA,
)

logger = logging.getLogger("progrock.state")

# Replies of APPLY_LUA other than a positive seq.
UNKNOWN: Final = -2  # no live state for the task (expired or flushed): rebuild it
ALREADY_TERMINAL: Final = -1  # the task is over: nothing may follow
STALE: Final = -3  # progress would go backwards, or nothing changed: dropped

TERMINAL_TTL: Final = 24 * 3600  # live state of a finished task is kept this long

# Per event loop (weakly: a closed loop's id may be reused by a new one).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)
_stores: weakref.WeakKeyDictionary[aioredis.Redis, TaskStore] = weakref.WeakKeyDictionary()


def get_redis(url: str | None = None) -> aioredis.Redis:
    """An asyncio Redis client for the running event loop (one per loop and URL)."""
    url = url or progrock_settings.REDIS_URL
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        # Explicit timeouts: never inherit a library default that may change.
        client = aioredis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        clients[url] = client
    return client


def state_key(task_id: str, prefix: str | None = None) -> str:
    return f"{prefix or progrock_settings.KEY_PREFIX}t:{task_id}"


def fanout_channel(task_id: str, prefix: str | None = None) -> str:
    return f"{prefix or progrock_settings.KEY_PREFIX}u:{task_id}"


#: Fields that hold any JSON value, read back with ``json.loads``: always written as
#: JSON, so that a string result ("42 rows", or "42") reads back as that string.
JSON_FIELDS: Final = frozenset({"result", "error"})


def encode_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Hash values as strings: numbers as text, None as '', dicts/lists (and anything
    in :data:`JSON_FIELDS`) as JSON."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            out[name] = ""
        elif name in JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, (int, float)):
            out[name] = repr(value)
        else:
            out[name] = json.dumps(value, separators=(",", ":"))
    return out


def _pairs(fields: Mapping[str, Any]) -> list[str]:
    """Hash fields as a flat [name, value, ...] list of strings (see encode_fields)."""
    return [item for pair in encode_fields(fields).items() for item in pair]


def decode_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _num(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def view_from_hash(task_id: str, fields: Mapping[str, str]) -> TaskView:
    """The :class:`TaskView` a watcher sees, from a task's live-state hash."""
    error = _json(fields.get("error"))
    return TaskView(
        task_id=task_id,
        status=Status(fields.get("status", "queued")),
        kind=fields.get("kind", ""),
        seq=int(fields.get("seq") or 0),
        progress=_num(fields.get("progress")) or 0,
        message=fields.get("message") or None,
        eta_s=_num(fields.get("eta_s")),
        rate=_num(fields.get("rate")),
        result=_json(fields.get("result")),
        error=error if isinstance(error, dict) else None,
        created_at=fields.get("created_at") or None,
        started_at=fields.get("started_at") or None,
        finished_at=fields.get("finished_at") or None,
    )


_STATUSES: Final[Mapping[bytes | str, Status]] = {
    **{s.value: s for s in Status},
    **{s.value.encode(): s for s in Status},
}


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


def _number(name: str, raw: bytes | str | None) -> float | None:
    """A numeric field, or None if absent; one that is not a number reads as absent
    (as the Lua scripts read it: ``tonumber(x) or 0``), logged."""
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        logger.warning("live-state field %r must be a number, got %r: read as absent", name, raw)
        return None


class LiveState(NamedTuple):
    """A task's live state as the worker reads it: its hash's fields, parsed once.

    Read from a decoded hash (:meth:`from_hash`) or from the values of
    :data:`~progrock.state.scripts.POLL_FIELDS` in order, as the claim script
    returns them (:meth:`from_values`). The hash keeps its short field names
    (:mod:`progrock.state.scripts`); no reader needs them. A NamedTuple rather
    than a frozen dataclass: a worker builds thousands a second, and a frozen
    dataclass costs about five times as much to build.
    """

    status: Status
    owner: str
    ref: str  # the backend's id of the task ('' until it runs)
    push: bool  # its progress is reported to ProgRock (no backend to poll)
    progress: float
    seq: int
    message: str
    rate_progress: float  # progress at the last rate estimate (0 before any)
    rate_time: float | None  # when that was (epoch s)
    rate: float | None  # progress per second, as last estimated
    db_written: float  # when progress was last copied to the database (epoch s; 0: never)
    fails: int  # failed polls in a row
    fail_since: float | None  # when the first of them failed (epoch s)
    next_due: float | None = None  # due time of the next poll tick that counts (ms)
    last_poll: float | None = None  # when the task was last polled (epoch s)

    @classmethod
    def from_values(
        cls,
        values: Sequence[bytes | str | None],
        *,
        next_due: float | None = None,
        last_poll: float | None = None,
    ) -> LiveState | None:
        """From the values of ``POLL_FIELDS``, in order; None if the task has no live
        state (no ``status``, or one that is not a status: rebuild it)."""
        status, owner, ref, push, progress, seq, message, rp, rt, rate, dbt, fails, since = values
        found = _STATUSES.get(status) if status is not None else None
        if found is None:
            if status is not None:
                logger.warning("live-state field 'status' must be a status, got %r", status)
            return None
        try:  # the fast way: every number parses
            numbers = (
                float(progress) if progress else 0.0,
                int(seq) if seq else 0,
                float(rp) if rp else 0.0,
                float(rt) if rt else None,
                float(rate) if rate else None,
                float(dbt) if dbt else 0.0,
                int(fails) if fails else 0,
                float(since) if since else None,
            )
        except ValueError:
            numbers = (
                _number("progress", progress) or 0.0,
                int(_number("seq", seq) or 0),
                _number("rp", rp) or 0.0,
                _number("rt", rt),
                _number("rate", rate),
                _number("dbt", dbt) or 0.0,
                int(_number("fails", fails) or 0),
                _number("fail_since", since),
            )
        return cls(
            found,
            _text(owner),
            _text(ref),
            push in (b"1", "1"),
            numbers[0],
            numbers[1],
            _text(message),
            numbers[2],
            numbers[3],
            numbers[4],
            numbers[5],
            numbers[6],
            numbers[7],
            next_due,
            last_poll,
        )

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> LiveState | None:
        """From a task's decoded hash (:func:`decode_hash`); None if it has no live state."""
        return cls.from_values(
            [fields.get(name) for name in POLL_FIELDS],
            next_due=_number(NEXT_DUE, fields.get(NEXT_DUE)),
            last_poll=_number(LAST_POLL, fields.get(LAST_POLL)),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One announced change of a task: the message plus the state it leaves."""

    task_id: str
    message: Mapping[str, Any]  # without seq
    status: Status
    progress: float
    fields: Mapping[str, Any]  # more hash fields to set

    def entry(self) -> list[Any]:
        """This change as one entry of :data:`APPLY_LUA`'s batch."""
        # The script writes seq and progress itself (it may keep a higher
        # progress than this one): head + seq + ',"progress":' + p + tail.
        message = dict(self.message)
        message.pop("progress", None)
        head, tail = frame_parts(message)
        ttl = TERMINAL_TTL if self.status.terminal else 0
        return [
            head,
            tail,
            flag_for(self.message["type"]),
            self.status.value,
            repr(clamp_progress(self.progress)),  # an int or a finite float: JSON as is
            str(ttl),
            self.message.get("message") or "",
            _pairs(self.fields),
        ]


class TaskStore:
    """Async access to live task state (used by workers and web processes)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._apply = client.register_script(APPLY_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._rearm = client.register_script(REARM_LUA)
        self._init_queued = client.register_script(INIT_QUEUED_LUA)
        self._overdue = client.register_script(OVERDUE_LUA)
        self._status_differs = client.register_script(STATUS_DIFFERS_LUA)

    @classmethod
    def from_settings(cls) -> TaskStore:
        """The store of the running event loop (one per loop and Redis URL)."""
        client = get_redis()
        store = _stores.get(client)
        if store is None:
            store = _stores[client] = cls(client)
        return store

    async def _run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script only when Redis lacks it (redis-py's script
        objects would add a SCRIPT EXISTS round trip to every call in a pipeline)."""
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:  # Redis restarted or flushed its scripts
            return await script(keys=keys, args=args)

    async def load(self, task_ids: Sequence[str]) -> dict[str, dict[str, str] | None]:
        """Live state of each task (None where there is none), in one round trip."""
        if not task_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(state_key(task_id))
            replies = await pipe.execute()
        return {
            task_id: (decode_hash(raw) if raw else None)
            for task_id, raw in zip(task_ids, replies, strict=True)
        }

    async def load_fields(
        self, task_ids: Sequence[str], fields: Sequence[str], chunk: int = 500
    ) -> dict[str, dict[str, str] | None]:
        """Some fields of each task's live state (None where there is none).

        Cheaper than :meth:`load` for scans over many tasks: Redis returns and
        Python decodes only what is asked for, in pipelines of ``chunk`` tasks,
        so a worker's polls run between two chunks. A task
        has live state when its ``status`` is set, so ask for ``status`` (or
        another field every state has) to tell the two apart.
        """
        out: dict[str, dict[str, str] | None] = {}
        for i in range(0, len(task_ids), chunk):
            part = task_ids[i : i + chunk]
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in part:
                    pipe.hmget(state_key(task_id), list(fields))
                replies = await pipe.execute()
            for task_id, values in zip(part, replies, strict=True):
                found = {
                    k: v.decode() for k, v in zip(fields, values, strict=True) if v is not None
                }
                out[task_id] = found or None
        return out

    async def overdue(
        self, task_ids: Sequence[str], deadline_ms: float, interval_ms: float, chunk: int = 1000
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Of running tasks: those without usable live state (no or an empty
        ``owner``: to rebuild), and those whose next tick is due at or before
        ``deadline_ms`` (their chain is lost). Each comes with the raw ``nd``
        its state holds (``''`` for none), which :meth:`rearm` must find.

        Checked in Redis (:data:`OVERDUE_LUA`), ``chunk`` tasks per call, so
        the worker decodes only the few that need repair.
        """
        missing: dict[str, str] = {}
        stalled: dict[str, str] = {}
        for i in range(0, len(task_ids), chunk):
            part = task_ids[i : i + chunk]
            replies = await self._run(
                self._overdue,
                [state_key(task_id) for task_id in part],
                [repr(deadline_ms), repr(interval_ms)],
            )
            for index, kind, expected in replies:
                nd = expected.decode() if isinstance(expected, bytes) else str(expected)
                (missing if int(kind) == 0 else stalled)[part[int(index) - 1]] = nd
        return missing, stalled

    async def status_differs(
        self, statuses: Sequence[tuple[str, str]], chunk: int = 1000
    ) -> dict[str, bool]:
        """Of ``(task_id, status)`` pairs, the tasks whose live status is another
        (or that have no live state), checked in Redis; each with whether it
        has live state at all."""
        out: dict[str, bool] = {}
        for i in range(0, len(statuses), chunk):
            part = statuses[i : i + chunk]
            replies = await self._run(
                self._status_differs,
                [state_key(task_id) for task_id, _ in part],
                [json.dumps([status for _, status in part])],
            )
            for index, has_state in replies:
                out[part[int(index) - 1][0]] = bool(int(has_state))
        return out

    async def claim(
        self, ticks: Sequence[tuple[str, float, float]], now: float
    ) -> dict[str, tuple[LiveState | None, float]]:
        """Claim poll ticks ``(task_id, due_ms, next_due_ms)`` and load their tasks.

        Only a task's next due tick counts (see
        :data:`~progrock.state.scripts.CLAIM_LUA`); stale or duplicated ticks
        are left out. Returns, per claimed task, its live state as the claim
        left it (None where it has none) and the next due time it now has.
        """
        if not ticks:
            return {}
        packed = json.dumps([(repr(due), repr(nxt)) for _, due, nxt in ticks])
        replies = await self._run(
            self._claim, [state_key(t[0]) for t in ticks], [repr(now), packed]
        )
        out: dict[str, tuple[LiveState | None, float]] = {}
        for (task_id, _, nxt), reply in zip(ticks, replies, strict=True):
            if reply == 0:
                continue
            state = LiveState.from_values(reply, next_due=nxt, last_poll=now) if reply else None
            out[task_id] = (state, nxt)
        return out

    async def rearm(self, task_id: str, expected: str, due_ms: float) -> bool:
        """Move a task's next due tick from ``expected`` to ``due_ms`` unless a poll moved it."""
        return bool(await self._run(self._rearm, [state_key(task_id)], [expected, repr(due_ms)]))

    async def view(self, task_id: str) -> TaskView | None:
        raw = await self.redis.hgetall(state_key(task_id))  # type: ignore[misc]
        return view_from_hash(task_id, decode_hash(raw)) if raw else None

    async def init_if_absent(self, task_id: str, fields: Mapping[str, Any]) -> bool:
        """Create a task's live state unless it exists; True if this call created it."""
        encoded = encode_fields(fields)
        key = state_key(task_id)
        if not await self.redis.hsetnx(key, "status", encoded.get("status", "queued")):  # type: ignore[misc]
            return False
        await self.redis.hset(key, mapping=encoded)  # type: ignore[misc]
        return True

    async def init_queued(self, states: Mapping[str, Mapping[str, Any]]) -> list[bool]:
        """Write the live state of queued tasks in one call, except a task whose
        live state already says anything but queued; per task, whether written."""
        if not states:
            return []
        keys = [state_key(task_id) for task_id in states]
        lists = json.dumps([_pairs(fields) for fields in states.values()])
        replies = await self._run(self._init_queued, keys, [lists])
        return [bool(r) for r in replies]

    async def init(self, task_id: str, fields: Mapping[str, Any]) -> None:
        """Create (or rebuild) a task's live state."""
        await self.redis.hset(state_key(task_id), mapping=encode_fields(fields))  # type: ignore[misc]

    async def apply(self, change: Change) -> int:
        return (await self.apply_many([change]))[0]

    async def apply_many(
        self,
        changes: Sequence[Change],
        bookkeeping: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> list[int]:
        """Apply and announce many changes, and set bookkeeping fields of other
        tasks (only where live state exists), in one atomic call; returns one
        reply per change."""
        keys, argv = apply_call(changes, bookkeeping)
        if not keys:
            return []
        replies = await self._run(self._apply, keys, argv)
        return [int(reply) for reply in replies[: len(changes)]]


def apply_call(
    changes: Sequence[Change], bookkeeping: Iterable[tuple[str, Mapping[str, Any]]] = ()
) -> tuple[list[str], list[str]]:
    """The KEYS and ARGV of one :data:`APPLY_LUA` call (for the async and sync stores)."""
    keys: list[str] = []
    entries: list[list[Any]] = []
    for change in changes:
        keys.extend((state_key(change.task_id), fanout_channel(change.task_id)))
        entries.append(change.entry())
    for task_id, fields in bookkeeping:
        if fields:
            keys.extend((state_key(task_id), ""))
            entries.append(["B", _pairs(fields)])
    return keys, [json.dumps(entries)]
