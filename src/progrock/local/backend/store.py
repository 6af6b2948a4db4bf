"""The backend's in-memory task table and the thread pool that runs hash tasks.

Rock tasks hold no thread and no timer: their state is computed from the
monotonic clock when asked, which keeps the status path cheap enough for
thousands of tasks polled every 200 ms. Hash tasks run in a small
``ThreadPoolExecutor``; queued ones wait in its queue, not in threads of their
own. Finished tasks are forgotten ``ttl`` seconds after they end.

With a ``path``, the table is also written through to a SQLite file
(:mod:`progrock.local.backend.persist`) and read back at start: a backend
restarted on the same file continues every task (status requests still read
memory only).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from progrock.local.backend.kinds import (
    MB,
    HashParams,
    ParamError,
    RockParams,
    State,
    generate_stream,
    parse_params,
    rock_error,
    rock_message,
    rock_result,
    rock_view,
)
from progrock.local.backend.persist import SavedTask, TaskFile

TaskDict = dict[str, Any]
Clock = Callable[[], float]

#: Seconds between two records of how far a running hash task got (with a task file,
#: its progress moves on in these steps).
CHECKPOINT_SECONDS = 0.25


class StoreFull(Exception):
    """The table already holds ``max_tasks`` tasks (HTTP 503)."""


class _RockTask:
    __slots__ = ("_final", "cancelled", "created_at", "id", "params", "started")

    def __init__(self, task_id: str, params: RockParams, started: float, created_at: float):
        self.id = task_id
        self.params = params
        self.started = started
        self.created_at = created_at
        self.cancelled: tuple[float, float] | None = None  # (at, progress)
        self._final: tuple[TaskDict, float] | None = None  # (state, ended_at)

    def _compute(self, now: float) -> tuple[TaskDict, float | None]:
        if self._final is not None:
            return self._final
        p = self.params
        result: Any = None
        error: str | None = None
        state: State
        if self.cancelled is not None:
            ended: float | None = self.cancelled[0]
            state, progress = "cancelled", self.cancelled[1]
        else:
            view = rock_view(p, now - self.started)
            state, progress = view.state, view.progress
            ended = None if view.ended_after is None else self.started + view.ended_after
            if state == "succeeded":
                result = rock_result(p)
            elif state == "failed":
                error = rock_error(p, progress)
        task = {
            "id": self.id,
            "kind": "rock",
            "state": state,
            "progress": progress,
            "message": rock_message(progress),
            "result": result,
            "error": error,
            "created_at": self.created_at,
        }
        if ended is not None:
            self._final = (task, ended)
        return task, ended

    def view(self, now: float) -> TaskDict:
        return self._compute(now)[0]

    def ended_at(self, now: float) -> float | None:
        return self._compute(now)[1]

    def cancel(self, now: float) -> bool:
        """Cancel if running; return False if the task already ended by itself."""
        task, ended = self._compute(now)
        if ended is not None:
            return bool(task["state"] == "cancelled")
        self.cancelled = (now, task["progress"])
        return True


class _HashTask:
    __slots__ = (
        "_ended",
        "_error",
        "_lock",
        "_result",
        "_state",
        "clock",
        "created_at",
        "done_bytes",
        "future",
        "id",
        "on_end",
        "on_progress",
        "params",
        "resumed_bytes",
        "saved_bytes",
        "started",
        "stop",
    )

    def __init__(
        self,
        task_id: str,
        params: HashParams,
        clock: Clock,
        created_at: float,
        resumed_bytes: int = 0,
    ):
        self.id = task_id
        self.params = params
        self.clock = clock
        self.created_at = created_at
        self.stop = threading.Event()
        self.future: Future[None] | None = None
        self.started = False
        self.done_bytes = 0
        # Bytes hashed before the backend restarted: hashed again, unthrottled.
        self.resumed_bytes = resumed_bytes
        self.saved_bytes = 0  # with a task file: the bytes it says are done (all it shows)
        self.on_end: Callable[[_HashTask], None] | None = None
        self.on_progress: Callable[[_HashTask], None] | None = None
        self._lock = threading.Lock()
        self._state: State = "running"
        self._result: Any = None
        self._error: str | None = None
        self._ended: float | None = None

    def _finish(self, state: State, *, result: Any = None, error: str | None = None) -> bool:
        with self._lock:
            if self._state != "running":
                return False
            self._state, self._result, self._error = state, result, error
            self._ended = self.clock()
        if self.on_end is not None:
            self.on_end(self)
        return True

    def restore_end(self, state: State, result: Any, error: str | None, ended: float) -> None:
        """Set the end a task file recorded (before the task is shown to anyone)."""
        self._state, self._result, self._error, self._ended = state, result, error, ended
        if state == "succeeded":
            self.done_bytes = self.params.total_bytes

    def run(self) -> None:
        """Hash the stream in a pool thread; stop between chunks once cancelled."""
        if self.stop.is_set():
            return
        self.started = True
        try:
            digest = hashlib.sha256()
            rate = self.params.rate_mb_s
            begin = last_record = self.clock()
            skip = self.resumed_bytes
            for chunk in generate_stream(self.params.mb):
                if self.stop.is_set():
                    return
                digest.update(chunk)
                self.done_bytes += len(chunk)
                if rate is not None and self.done_bytes > skip:
                    due = begin + (self.done_bytes - skip) / (rate * MB)
                    wait = due - self.clock()
                    if wait > 0 and self.stop.wait(wait):
                        return
                if self.on_progress is not None and self.clock() - last_record >= (
                    CHECKPOINT_SECONDS
                ):
                    last_record = self.clock()
                    self.on_progress(self)
                    self.saved_bytes = self.done_bytes
            self._finish(
                "succeeded", result={"sha256": digest.hexdigest(), "bytes": self.done_bytes}
            )
        except Exception as exc:  # pragma: no cover - hashing bytes does not fail
            self._finish("failed", error=f"hash failed: {type(exc).__name__}: {exc}")

    def view(self, now: float) -> TaskDict:
        with self._lock:
            state, result, error = self._state, self._result, self._error
        total = self.params.total_bytes
        # With a task file, only progress it holds: a restart must not show less.
        done = self.done_bytes if self.on_progress is None else self.saved_bytes
        done = total if state == "succeeded" else max(done, self.resumed_bytes)
        if state == "running" and not self.started:
            message = "queued"
        else:
            message = f"hashed {done / MB:g} of {self.params.mb} MiB"
        return {
            "id": self.id,
            "kind": "hash",
            "state": state,
            "progress": 100.0 * done / total,
            "message": message,
            "result": result,
            "error": error,
            "created_at": self.created_at,
        }

    def ended_at(self, now: float) -> float | None:
        return self._ended

    def cancel(self, now: float) -> bool:
        self.stop.set()
        if self.future is not None:
            self.future.cancel()
        if self._finish("cancelled"):
            return True
        return self._state == "cancelled"


_Task = _RockTask | _HashTask


class TaskStore:
    """Every task the backend knows, by id.

    ``ttl``: seconds a finished task stays visible; ``hash_workers``: threads
    running hash tasks at once; ``max_tasks``: table size beyond which
    :meth:`create` raises :class:`StoreFull`; ``path``: a SQLite file that
    keeps the tasks across restarts (its folder must exist), None: memory only.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        hash_workers: int = 2,
        max_tasks: int = 100_000,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        path: str | Path | None = None,
    ) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds, got {ttl!r}")
        if hash_workers < 1:
            raise ValueError(f"hash_workers must be >= 1, got {hash_workers!r}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, got {max_tasks!r}")
        self.ttl = ttl
        self.max_tasks = max_tasks
        self.clock = clock
        self.wall_clock = wall_clock
        self._tasks: dict[str, _Task] = {}
        self._keys: dict[str, str] = {}  # idempotency key -> task id
        self._pool = ThreadPoolExecutor(hash_workers, thread_name_prefix="progrock-hash")
        # Unix time = monotonic time + offset (the task file holds Unix times).
        self._offset = wall_clock() - clock()
        self._file = None if path is None else TaskFile(path)
        if self._file is not None:
            for saved in self._file.load():
                self._restore(saved)

    def _restore(self, saved: SavedTask) -> None:
        """Put a task read from the task file back in the table."""
        try:
            parsed = parse_params(saved.kind, saved.params)
        except ParamError as exc:
            raise ValueError(f"task {saved.id!r} in the task file {self._file}: {exc}") from None
        started = saved.started_at - self._offset
        ended = None if saved.ended_at is None else saved.ended_at - self._offset
        task: _Task
        if isinstance(parsed, RockParams):
            task = _RockTask(saved.id, parsed, started, saved.created_at)
            if saved.state == "cancelled" and ended is not None:
                task.cancelled = (ended, saved.progress or 0.0)
        else:
            task = _HashTask(saved.id, parsed, self.clock, saved.created_at, saved.done_bytes)
            if saved.state is not None and ended is not None:
                state: State = saved.state  # type: ignore[assignment]
                task.restore_end(state, saved.result, saved.error, ended)
            else:
                self._watch(task)
                task.future = self._pool.submit(task.run)
        self._tasks[saved.id] = task
        if saved.key is not None:
            self._keys[saved.key] = saved.id

    def _watch(self, task: _HashTask) -> None:
        """Write a hash task's progress and end to the task file."""
        file = self._file
        if file is None:
            return
        offset = self._offset

        def on_end(t: _HashTask) -> None:
            view = t.view(t.clock())
            ended = (t.ended_at(0.0) or t.clock()) + offset
            file.end(t.id, view["state"], at=ended, result=view["result"], error=view["error"])

        task.on_end = on_end
        task.on_progress = lambda t: file.checkpoint(t.id, t.done_bytes)

    def __len__(self) -> int:
        return len(self._tasks)

    def by_key(self, key: str) -> TaskDict | None:
        """The task created with this idempotency key, if it is still held."""
        task_id = self._keys.get(key)
        return None if task_id is None else self.get(task_id)

    def create(self, kind: object, params: object, *, key: str | None = None) -> TaskDict:
        """Start a task; raise ParamError for a bad kind/params, StoreFull when full."""
        parsed = parse_params(kind, params)
        if len(self._tasks) >= self.max_tasks:
            self.sweep()
            if len(self._tasks) >= self.max_tasks:
                raise StoreFull(f"the backend already holds {len(self._tasks)} tasks (max_tasks)")
        task_id = uuid.uuid4().hex
        now = self.clock()
        created = self.wall_clock()
        if self._file is not None:  # written before anyone hears of the task
            saved = dict(params) if isinstance(params, Mapping) else {}
            self._file.add(SavedTask(task_id, str(kind), saved, key, created, now + self._offset))
        task: _Task
        if isinstance(parsed, RockParams):
            task = _RockTask(task_id, parsed, now, created)
        else:
            task = _HashTask(task_id, parsed, self.clock, created)
            self._watch(task)
            task.future = self._pool.submit(task.run)
        self._tasks[task_id] = task
        if key is not None:
            self._keys[key] = task_id
        return task.view(now)

    def get(self, task_id: str) -> TaskDict | None:
        task = self._tasks.get(task_id)
        return None if task is None else task.view(self.clock())

    def status_many(self, task_ids: Iterable[str]) -> dict[str, TaskDict | None]:
        now = self.clock()
        tasks = self._tasks
        out: dict[str, TaskDict | None] = {}
        for task_id in task_ids:
            task = tasks.get(task_id)
            out[task_id] = None if task is None else task.view(now)
        return out

    def cancel(self, task_id: str) -> tuple[Literal["cancelled", "conflict"], TaskDict] | None:
        """Cancel a task: ``None`` if unknown, ``("conflict", state)`` if it already ended."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        now = self.clock()
        outcome: Literal["cancelled", "conflict"] = "cancelled" if task.cancel(now) else "conflict"
        if isinstance(task, _RockTask) and task.cancelled is not None and self._file is not None:
            at, progress = task.cancelled
            self._file.end(task_id, "cancelled", at=at + self._offset, progress=progress)
        return outcome, task.view(now)

    def sweep(self) -> int:
        """Forget tasks that ended more than ``ttl`` seconds ago; return how many."""
        now = self.clock()
        expired = [
            task_id
            for task_id, task in self._tasks.items()
            if (ended := task.ended_at(now)) is not None and now - ended >= self.ttl
        ]
        for task_id in expired:
            del self._tasks[task_id]
        if expired and self._file is not None:
            self._file.forget(expired)
        if expired:
            gone = set(expired)
            self._keys = {k: t for k, t in self._keys.items() if t not in gone}
        return len(expired)

    def close(self) -> None:
        """Stop every hash thread promptly and shut the pool down."""
        for task in self._tasks.values():
            if isinstance(task, _HashTask):
                task.on_end = None  # a stopped hash task did not end: a restart continues it
                task.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._file is not None:
            self._file.close()


__all__ = ["ParamError", "StoreFull", "TaskDict", "TaskStore"]
