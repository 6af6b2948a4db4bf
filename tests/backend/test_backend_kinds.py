"""The backend's task kinds: parameter validation and rock/hash arithmetic (pure)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progrock.local.backend.kinds import (
    CHUNK_SIZE,
    MB,
    HashParams,
    ParamError,
    RockParams,
    generate_stream,
    parse_params,
    rock_view,
)
from progrock.local.backend.store import TaskStore


def test_defaults() -> None:
    """Omitted params take the documented defaults."""
    assert parse_params("rock", None) == RockParams(3.0, 200.0, None)
    assert parse_params("hash", {}) == HashParams(32, None)


def test_rock_defaults_are_the_2017_demos_timing() -> None:
    """The default rock task gains 3 % per 200 ms and succeeds at 34 steps (6.8 s)."""
    params = RockParams()
    assert rock_view(params, 0.199).progress == 0
    assert rock_view(params, 0.2).progress == 3
    assert rock_view(params, 6.7).progress == 99
    done = rock_view(params, 6.8)
    assert (done.state, done.progress) == ("succeeded", 100)
    assert done.ended_after == pytest.approx(6.8)


def test_fail_at_zero_fails_immediately() -> None:
    """fail_at=0 fails at once with progress 0."""
    view = rock_view(RockParams(fail_at=0), 0.0)
    assert (view.state, view.progress, view.ended_after) == ("failed", 0, 0)


def test_fail_at_100_fails_instead_of_succeeding() -> None:
    """fail_at=100 fails when progress reaches 100: failure wins the tie."""
    assert rock_view(RockParams(fail_at=100), 10.0).state == "failed"


@given(
    step=st.floats(min_value=0.01, max_value=150),
    interval=st.floats(min_value=1, max_value=1000),
    elapsed=st.floats(min_value=0, max_value=1e6),
)
def test_rock_progress_is_bounded_and_monotonic(
    step: float, interval: float, elapsed: float
) -> None:
    """Rock progress stays within 0..100, never falls, and is 100 exactly when succeeded."""
    params = RockParams(step=step, interval_ms=interval)
    now, later = rock_view(params, elapsed), rock_view(params, elapsed * 1.5 + 0.001)
    assert 0 <= now.progress <= later.progress <= 100
    assert (now.progress == 100) == (now.state == "succeeded")


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        (None, {}, "'kind' must be a string, got NoneType: None"),
        ("rok", {}, "unknown kind 'rok'; expected one of ['hash', 'rock']"),
        ("rock", "x", "'params' must be an object, got str: 'x'"),
        ("rock", {"step": True}, "rock param 'step' must be a finite number, got True"),
        ("rock", {"step": float("inf")}, "got inf"),
        ("rock", {"interval_ms": -5}, "rock param 'interval_ms' must be > 0, got -5"),
        ("rock", {"fail_at": -1}, "'fail_at' must be within 0..100, got -1.0"),
        ("hash", {"mb": 0}, "'mb' must be an integer within 1..4096, got 0"),
        ("hash", {"mb": "1"}, "got '1'"),
        ("hash", {"rate_mb_s": 0}, "'rate_mb_s' must be > 0, got 0"),
        ("hash", {"size": 1}, "unknown params ['size'] for kind 'hash'"),
    ],
)
def test_bad_params(kind: object, params: object, message: str) -> None:
    """Bad kinds and params raise ParamError quoting the bad value."""
    with pytest.raises(ParamError) as info:
        parse_params(kind, params)
    assert message in str(info.value)


def test_generate_stream_is_deterministic_and_varied() -> None:
    """The stream has the requested size, repeats exactly, and its chunks differ."""
    chunks = list(generate_stream(1))
    assert sum(map(len, chunks)) == MB and all(len(c) == CHUNK_SIZE for c in chunks)
    assert len(set(chunks)) == len(chunks)
    assert list(generate_stream(1)) == chunks
    assert list(generate_stream(0)) == []
    with pytest.raises(ValueError, match="got -1"):
        list(generate_stream(-1))


def test_store_rock_lifecycle_on_a_fake_clock() -> None:
    """With an injected clock, a rock task runs, succeeds, and is swept after the TTL."""
    now = [100.0]
    store = TaskStore(ttl=10, clock=lambda: now[0], wall_clock=lambda: 5.0)
    try:
        task = store.create("rock", {"step": 50, "interval_ms": 1000})
        assert (task["progress"], task["created_at"]) == (0, 5.0)
        now[0] += 1.5
        assert store.get(task["id"]) == {**task, "progress": 50.0, "message": "rocking 50%"}
        now[0] += 1
        assert store.get(task["id"])["state"] == "succeeded"  # type: ignore[index]
        assert store.cancel(task["id"])[0] == "conflict"  # type: ignore[index]
        now[0] += 9.1  # ended at 102, now 111.6: not yet 10 s
        assert store.sweep() == 0
        now[0] += 1
        assert store.sweep() == 1
        assert store.get(task["id"]) is None
    finally:
        store.close()


def test_store_cancelled_rock_stays_cancelled() -> None:
    """A cancelled rock task keeps its progress and state however much time passes."""
    now = [0.0]
    store = TaskStore(clock=lambda: now[0])
    try:
        task = store.create("rock", {"step": 10, "interval_ms": 1000})
        now[0] = 3.5
        verdict, state = store.cancel(task["id"])  # type: ignore[misc]
        assert (verdict, state["state"], state["progress"]) == ("cancelled", "cancelled", 30)
        now[0] = 1000
        assert store.get(task["id"]) == state
        assert store.cancel(task["id"]) == ("cancelled", state)
    finally:
        store.close()


def test_store_max_tasks() -> None:
    """Creating beyond max_tasks raises StoreFull naming the count."""
    from progrock.local.backend.store import StoreFull

    store = TaskStore(max_tasks=2)
    try:
        store.create("rock", {})
        store.create("rock", {})
        with pytest.raises(StoreFull, match="already holds 2 tasks"):
            store.create("rock", {})
    finally:
        store.close()


def test_hash_stream_digest_is_pinned() -> None:
    """The 1 MiB stream's digest is a fixed value: changing the generator breaks results."""
    digest = hashlib.sha256(b"".join(generate_stream(1))).hexdigest()
    assert digest == "6773b842a26b5fdb2a9e7316bff7b9e9a311ac5e2b82101396d13e8ead9ab9f6"
