"""Task kinds of the reference backend: their parameters and pure logic.

Pure: no I/O, no threads, no clocks. :mod:`progrock.local.backend.store` feeds the
elapsed time in and runs the hash workload in its thread pool.

* ``rock`` — the 2017 demo's task: ``step`` percent every ``interval_ms``. Its
  progress is *derived* from the elapsed time, so a rock task costs nothing
  between two polls (no timer, no thread).
* ``hash`` — a real workload: SHA-256 over :func:`generate_stream`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MB = 1024 * 1024
"""One "megabyte" of the ``hash`` kind (a mebibyte)."""

CHUNK_SIZE = 256 * 1024
"""Bytes hashed between two progress updates / cancellation checks."""

MAX_HASH_MB = 4096

State = Literal["running", "succeeded", "failed", "cancelled"]


class ParamError(ValueError):
    """A ``kind`` or ``params`` value the backend refuses (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class RockParams:
    step: float = 3.0
    interval_ms: float = 200.0
    fail_at: float | None = None

    @property
    def interval(self) -> float:
        """Seconds between two steps."""
        return self.interval_ms / 1000.0

    @property
    def steps_to_done(self) -> int:
        """Steps until progress reaches 100."""
        return _steps_to_reach(self.step, 100.0)

    @property
    def steps_to_fail(self) -> int | None:
        """Steps until progress reaches ``fail_at``, if it fails before finishing."""
        if self.fail_at is None:
            return None
        steps = _steps_to_reach(self.step, self.fail_at)
        return steps if steps <= self.steps_to_done else None


@dataclass(frozen=True, slots=True)
class HashParams:
    mb: int = 32
    rate_mb_s: float | None = None

    @property
    def total_bytes(self) -> int:
        return self.mb * MB


Params = RockParams | HashParams


@dataclass(frozen=True, slots=True)
class RockView:
    """A rock task's state at one instant."""

    state: State
    progress: float
    ended_after: float | None
    """Seconds after the start at which the task ended by itself, if it did."""


KINDS: dict[str, dict[str, dict[str, Any]]] = {
    "rock": {
        "step": {"default": 3, "doc": "percent added per interval (number > 0)"},
        "interval_ms": {"default": 200, "doc": "milliseconds per step (number > 0)"},
        "fail_at": {
            "default": None,
            "doc": "fail once progress reaches this percent (number 0..100, optional)",
        },
    },
    "hash": {
        "mb": {"default": 32, "doc": f"mebibytes to hash (integer 1..{MAX_HASH_MB})"},
        "rate_mb_s": {
            "default": None,
            "doc": "throttle to this many MiB per second (number > 0, optional)",
        },
    },
}
"""Every kind and its parameters, as served by ``GET /kinds``."""


def parse_params(kind: object, params: object) -> Params:
    """Validate a ``POST /tasks`` body's ``kind`` and ``params``; raise ParamError."""
    if not isinstance(kind, str):
        raise ParamError(f"'kind' must be a string, got {type(kind).__name__}: {kind!r}")
    if kind not in KINDS:
        raise ParamError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParamError(f"'params' must be an object, got {type(params).__name__}: {params!r}")
    unknown = sorted(str(k) for k in set(params) - set(KINDS[kind]))
    if unknown:
        raise ParamError(
            f"unknown params {unknown} for kind {kind!r}; expected some of {sorted(KINDS[kind])}"
        )
    if kind == "rock":
        fail_at = params.get("fail_at")
        if fail_at is not None:
            fail_at = _number(kind, "fail_at", fail_at)
            if not 0 <= fail_at <= 100:
                raise ParamError(f"rock param 'fail_at' must be within 0..100, got {fail_at!r}")
        return RockParams(
            step=_positive(kind, "step", params.get("step", 3)),
            interval_ms=_positive(kind, "interval_ms", params.get("interval_ms", 200)),
            fail_at=fail_at,
        )
    mb = params.get("mb", 32)
    if isinstance(mb, bool) or not isinstance(mb, int) or not 1 <= mb <= MAX_HASH_MB:
        raise ParamError(f"hash param 'mb' must be an integer within 1..{MAX_HASH_MB}, got {mb!r}")
    rate = params.get("rate_mb_s")
    return HashParams(mb=mb, rate_mb_s=None if rate is None else _positive(kind, "rate_mb_s", rate))


def _number(kind: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamError(f"{kind} param {name!r} must be a finite number, got {value!r}")
    return float(value)


def _positive(kind: str, name: str, value: object) -> float:
    number = _number(kind, name, value)
    if number <= 0:
        raise ParamError(f"{kind} param {name!r} must be > 0, got {value!r}")
    return number


def _steps_to_reach(step: float, target: float) -> int:
    """Smallest ``n`` with ``step * n >= target`` (robust to float rounding)."""
    n = max(0, math.ceil(target / step))
    while n > 0 and step * (n - 1) >= target:
        n -= 1
    while step * n < target:
        n += 1
    return n


def rock_view(params: RockParams, elapsed: float) -> RockView:
    """The state of a rock task ``elapsed`` seconds after it started.

    ``progress = min(100, step * floor(elapsed / interval))``; the task fails
    when progress first reaches ``fail_at`` and succeeds when it reaches 100.
    """
    steps = math.floor(max(0.0, elapsed) / params.interval)
    fail_steps = params.steps_to_fail
    if fail_steps is not None and steps >= fail_steps:
        return RockView(
            "failed", min(100.0, params.step * fail_steps), fail_steps * params.interval
        )
    done_steps = params.steps_to_done
    if steps >= done_steps:
        return RockView("succeeded", 100.0, done_steps * params.interval)
    return RockView("running", min(100.0, params.step * steps), None)


def rock_message(progress: float) -> str:
    return f"rocking {progress:g}%"


def rock_error(params: RockParams, progress: float) -> str:
    return f"rock failed at {progress:g}% (fail_at={params.fail_at:g})"


def rock_result(params: RockParams) -> dict[str, int]:
    return {"riffs": params.steps_to_done}


_BLOCK_CACHE: dict[int, bytes] = {}


def _base_block(size: int) -> bytes:
    """A fixed pseudo-random block: SHA-256 in counter mode over a constant seed."""
    block = _BLOCK_CACHE.get(size)
    if block is None:
        parts = bytearray()
        counter = 0
        while len(parts) < size:
            parts += hashlib.sha256(b"progrock-hash-stream:%d" % counter).digest()
            counter += 1
        block = _BLOCK_CACHE[size] = bytes(parts[:size])
    return block


def generate_stream(mb: int) -> Iterator[bytes]:
    """The deterministic byte stream the ``hash`` kind hashes: ``mb`` MiB in chunks.

    Chunk ``i`` (of :data:`CHUNK_SIZE` bytes) is a fixed pseudo-random block
    whose first 8 bytes are replaced by ``i`` (big-endian), so every chunk
    differs yet making one is a single copy. A ``hash`` task of ``mb`` MiB
    reports ``hashlib.sha256(b"".join(generate_stream(mb))).hexdigest()``.
    """
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 0:
        raise ValueError(f"mb must be a non-negative integer, got {mb!r}")
    tail = _base_block(CHUNK_SIZE)[8:]
    for index in range(mb * MB // CHUNK_SIZE):
        yield index.to_bytes(8, "big") + tail
