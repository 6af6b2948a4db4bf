"""Per-client limits of a web process: sockets per address, starts per minute."""

from __future__ import annotations

from progrock.web import limits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sockets_per_address_are_counted_and_released() -> None:
    """An address gets `limit` sockets; closing one lets the next in."""
    counter = limits.SocketCounter(limit=2)
    assert counter.acquire("203.0.113.5") and counter.acquire("203.0.113.5")
    assert not counter.acquire("203.0.113.5")
    assert counter.acquire("203.0.113.6")  # another address is not affected
    counter.release("203.0.113.5")
    assert counter.acquire("203.0.113.5")
    counter.release("203.0.113.5")
    counter.release("203.0.113.5")
    assert counter.open == {"203.0.113.6": 1}


def test_loopback_and_unknown_addresses_are_not_limited() -> None:
    """Local tools (and a proxy that hides the client) are never refused by address."""
    counter = limits.SocketCounter(limit=1)
    for address in ("127.0.0.1", "::1", None):
        assert all(counter.acquire(address) for _ in range(5))
    assert counter.open == {}


def test_client_address_reads_the_scope() -> None:
    """The address is the scope's client host; a Unix socket has none."""
    assert limits.client_address({"client": ["198.51.100.1", 5555]}) == "198.51.100.1"
    assert limits.client_address({"client": None}) is None
    assert limits.client_address({}) is None


def test_starts_per_minute_refill_over_time() -> None:
    """A bucket allows a burst of per_minute, then one start per 60/per_minute seconds."""
    clock = Clock()
    limiter = limits.RateLimiter(per_minute=3, clock=clock)
    assert [limiter.take("o") for _ in range(4)] == [True, True, True, False]
    clock.now += 20  # one start's worth
    assert limiter.take("o") and not limiter.take("o")
    assert limiter.take("other")


def test_start_limits_name_the_limit_hit() -> None:
    """The owner limit applies everywhere, the address limit only to remote addresses."""
    clock = Clock()
    start_limits = limits.StartLimits(per_owner=2, per_address=3, clock=clock)
    assert start_limits.refusal("a", "203.0.113.9") is None
    assert start_limits.refusal("a", "203.0.113.9") is None
    refusal = start_limits.refusal("a", "203.0.113.9")
    assert refusal is not None and "owner" in refusal
    assert start_limits.refusal("b", "203.0.113.9") is None
    refusal = start_limits.refusal("c", "203.0.113.9")
    assert refusal is not None and "address" in refusal
    assert all(start_limits.refusal(f"o{i}", "127.0.0.1") is None for i in range(10))


def test_full_buckets_are_forgotten() -> None:
    """Keys idle long enough to be full again leave memory."""
    clock = Clock()
    limiter = limits.RateLimiter(per_minute=60, clock=clock)
    for i in range(999):
        limiter.take(f"k{i}")
    clock.now += 120
    limiter.take("last")  # the 1000th call sweeps
    assert list(limiter.buckets) == ["last"]
