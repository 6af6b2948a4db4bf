"""Live task state in Redis, and the one atomic way to change and announce it.

Each task has a hash ``<prefix>t:<task_id>`` with its live state. Every
announced change goes through :data:`APPLY_LUA`, which in one atomic step
refuses anything after a terminal state, keeps progress from going backwards,
increments the task's ``seq``, stores the new fields and publishes the message
on ``<prefix>u:<task_id>`` as ``"<seq> <flag> <json>"`` for the web processes.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from progrock.conf import progrock_settings
from progrock.protocol import Status, TaskView, clamp_progress, flag_for, frame_parts

# Replies of APPLY_LUA other than a positive seq.
UNKNOWN: Final = -2  # no live state for the task (expired or flushed): rebuild it
ALREADY_TERMINAL: Final = -1  # the task is over: nothing may follow
STALE: Final = -3  # progress would go backwards, or nothing changed: dropped

TERMINAL_TTL: Final = 24 * 3600  # live state of a finished task is kept this long

APPLY_LUA: Final = """
-- KEYS: state hash, fan-out channel
-- ARGV: head, tail, flag, status, progress, ttl, message, field/value pairs...
-- publishes head .. seq .. ',"progress":' .. progress .. tail
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return -2 end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return -1 end
local stored = redis.call('HGET', KEYS[1], 'progress') or '0'
local old = tonumber(stored) or 0
local new = tonumber(ARGV[5])
local progress = ARGV[5]
if new < old then
  if ARGV[3] ~= 'T' then return -3 end
  progress = stored  -- an end never shows less progress than was shown
end
if ARGV[3] == 'P' and new == old
   and (redis.call('HGET', KEYS[1], 'message') or '') == ARGV[7] then
  return -3  -- nothing changed (e.g. a tick delivered twice): announce nothing
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local fields = {'status', ARGV[4], 'progress', progress}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[6]) end
local body = ARGV[1] .. seq .. ',"progress":' .. progress .. ARGV[2]
redis.call('PUBLISH', KEYS[2], seq .. ' ' .. ARGV[3] .. ' ' .. body)
return seq
"""

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


def encode_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Hash values as strings: numbers as text, None as '', dicts/lists as JSON."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            out[name] = ""
        elif isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, (int, float)):
            out[name] = repr(value)
        else:
            out[name] = json.dumps(value, separators=(",", ":"))
    return out


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


@dataclass(frozen=True, slots=True)
class Change:
    """One announced change of a task: the message plus the state it leaves."""

    task_id: str
    message: Mapping[str, Any]  # without seq
    status: Status
    progress: float
    fields: Mapping[str, Any]  # more hash fields to set

    def args(self) -> tuple[list[str], list[str]]:
        # The script writes seq and progress itself (it may keep a higher
        # progress than this one): head + seq + ',"progress":' + p + tail.
        message = dict(self.message)
        message.pop("progress", None)
        head, tail = frame_parts(message)
        ttl = TERMINAL_TTL if self.status.terminal else 0
        argv = [
            head,
            tail,
            flag_for(self.message["type"]),
            self.status.value,
            json.dumps(clamp_progress(self.progress)),
            str(ttl),
            self.message.get("message") or "",
        ]
        for name, value in encode_fields(self.fields).items():
            argv.extend((name, value))
        return [state_key(self.task_id), fanout_channel(self.task_id)], argv


class TaskStore:
    """Async access to live task state (used by workers and web processes)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._apply = client.register_script(APPLY_LUA)

    @classmethod
    def from_settings(cls) -> TaskStore:
        """The store of the running event loop (one per loop and Redis URL)."""
        client = get_redis()
        store = _stores.get(client)
        if store is None:
            store = _stores[client] = cls(client)
        return store

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

    async def init(self, task_id: str, fields: Mapping[str, Any]) -> None:
        """Create (or rebuild) a task's live state."""
        await self.redis.hset(state_key(task_id), mapping=encode_fields(fields))  # type: ignore[misc]

    async def apply(self, change: Change) -> int:
        keys, argv = change.args()
        return int(await self._apply(keys=keys, args=argv))

    async def apply_many(
        self,
        changes: Sequence[Change],
        bookkeeping: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> list[int]:
        """Apply and announce many changes, and set bookkeeping fields of other
        tasks, in one round trip; returns one reply per change."""
        calls = [change.args() for change in changes]
        async with self.redis.pipeline(transaction=False) as pipe:
            # EVALSHA straight into the pipeline: redis-py's script objects would
            # add a SCRIPT EXISTS round trip to every execute.
            for keys, argv in calls:
                pipe.evalsha(self._apply.sha, len(keys), *keys, *argv)
            extra = 0
            for task_id, fields in bookkeeping:
                if fields:
                    pipe.hset(state_key(task_id), mapping=encode_fields(fields))
                    extra += 1
            if not calls and not extra:
                return []
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies[len(calls) :]:
            if isinstance(reply, Exception):
                raise reply  # a bookkeeping write failed
        results: list[int] = []
        for (keys, argv), reply in zip(calls, replies, strict=False):
            if isinstance(reply, NoScriptError):  # Redis restarted or flushed its scripts
                reply = await self._apply(keys=keys, args=argv)
            elif isinstance(reply, Exception):
                raise reply
            results.append(int(reply))
        return results
