"""Delay envelopes: validation, storage format and merging (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from progrock.delay.envelope import (
    Envelope,
    InvalidEnvelope,
    Pending,
    merge_contents,
    plan_deliveries,
)


def test_from_message_reads_wire_format() -> None:
    """The Channels 1 wire format parses into an Envelope with defaults."""
    envelope = Envelope.from_message({"channel": "out", "content": {"type": "t"}, "delay": 5})
    assert envelope == Envelope("out", {"type": "t"}, 5.0, None, False)
    keyed = Envelope.from_message(
        {"channel": "out", "content": {"type": "t"}, "delay": 0, "key": "k", "merge": True}
    )
    assert (keyed.key, keyed.merge) == ("k", True)


@pytest.mark.parametrize(
    ("message", "quoted"),
    [
        ([1, 2], "got [1, 2]"),
        ({"channel": "out", "content": {"type": "t"}}, "no 'delay'"),
        ({"channel": 3, "content": {"type": "t"}, "delay": 0}, "got 3"),
        ({"channel": "bad name!", "content": {"type": "t"}, "delay": 0}, "got 'bad name!'"),
        ({"channel": "x" * 100, "content": {"type": "t"}, "delay": 0}, "shorter than 100"),
        ({"channel": "out", "content": "hi", "delay": 0}, "got 'hi'"),
        ({"channel": "out", "content": {"type": 7}, "delay": 0}, "got 7"),
        ({"channel": "out", "content": {}, "delay": 0}, "got None"),
        ({"channel": "out", "content": {"type": "t"}, "delay": -1}, "got -1"),
        ({"channel": "out", "content": {"type": "t"}, "delay": True}, "got True"),
        ({"channel": "out", "content": {"type": "t"}, "delay": float("inf")}, "got inf"),
        ({"channel": "out", "content": {"type": "t"}, "delay": 0, "key": ""}, "got ''"),
        ({"channel": "out", "content": {"type": "t"}, "delay": 0, "merge": 1}, "got 1"),
    ],
)
def test_invalid_envelopes_quote_the_value(message: Any, quoted: str) -> None:
    """Every malformed envelope is refused with an error quoting the bad value."""
    with pytest.raises(InvalidEnvelope) as info:
        Envelope.from_message(message)
    assert quoted in str(info.value)


def test_invalid_envelope_is_a_value_error() -> None:
    """InvalidEnvelope is also a ValueError, for callers that catch that."""
    with pytest.raises(ValueError):
        Envelope("out", {"type": "t"}, -5)


def test_pending_round_trip() -> None:
    """A stored message survives JSON and keeps key, merge and due time."""
    envelope = Envelope("out", {"type": "t", "ticks": [["a", 1]]}, 250, key="poll:a", merge=True)
    pending = Pending.from_envelope("id1", envelope, 1000.0)
    assert pending.due_ms == 1250.0
    assert Pending.from_json("id1", pending.to_json()) == pending


def test_unserializable_content_refused() -> None:
    """Content that JSON cannot hold is refused before it reaches the store."""
    pending = Pending.from_envelope("id1", Envelope("out", {"type": "t", "x": {1, 2}}, 0), 0.0)
    with pytest.raises(InvalidEnvelope, match="not JSON-serializable"):
        pending.to_json()


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("", "has no payload"),
        ("nope", "'nope'"),
        ("[1]", "'[1]'"),
        ('{"channel": "out", "content": {"type": "t"}}', "'due' must be a number, got None"),
        ('{"channel": "out", "content": {"type": "t"}, "due": "1"}', "got '1'"),
        ('{"channel": "", "content": {"type": "t"}, "due": 1}', "got ''"),
    ],
)
def test_malformed_stored_payloads(raw: str, quoted: str) -> None:
    """A malformed payload in the store is refused with the reason quoted."""
    with pytest.raises(InvalidEnvelope) as info:
        Pending.from_json("id1", raw)
    assert quoted in str(info.value)


def test_merge_contents_concatenates_lists() -> None:
    """Merging concatenates list fields in order and keeps other fields of the first."""
    merged = merge_contents(
        [
            {"type": "p", "ticks": [[1]], "n": 1},
            {"type": "p", "ticks": [[2], [3]], "n": 2, "extra": [9]},
        ]
    )
    assert merged == {"type": "p", "ticks": [[1], [2], [3]], "n": 1, "extra": [9]}


def test_merge_contents_does_not_mutate_inputs() -> None:
    """Merging leaves the source contents untouched."""
    first = {"type": "p", "ticks": [[1]]}
    merge_contents([first, {"type": "p", "ticks": [[2]]}])
    assert first == {"type": "p", "ticks": [[1]]}


def _pending(i: int, *, channel: str = "w", kind: str = "p", merge: bool = True) -> Pending:
    return Pending(f"id{i}", channel, {"type": kind, "ticks": [[i]]}, float(i), None, merge)


def test_plan_deliveries_groups_and_batches() -> None:
    """Merge messages group by (channel, type) in batches; others go out alone."""
    messages = [_pending(i) for i in range(5)] + [
        _pending(10, merge=False),
        _pending(11, kind="q"),
        _pending(12, channel="v"),
    ]
    deliveries = plan_deliveries(messages, batch=2)
    shapes = [
        (d.channel, d.content["type"], [t[0] for t in d.content["ticks"]]) for d in deliveries
    ]
    assert shapes == [
        ("w", "p", [0, 1]),
        ("w", "p", [2, 3]),
        ("w", "p", [4]),
        ("w", "p", [10]),
        ("w", "q", [11]),
        ("v", "p", [12]),
    ]
    assert [m.id for m in deliveries[0].sources] == ["id0", "id1"]


def test_plan_deliveries_counts_list_items_toward_the_batch() -> None:
    """A batch holds at most ``batch`` list items; a message larger than that goes alone."""
    sizes = [3, 2, 5, 1, 1]
    messages = [
        Pending(f"id{i}", "w", {"type": "p", "ticks": [[i, j] for j in range(n)]}, i, None, True)
        for i, n in enumerate(sizes)
    ]
    deliveries = plan_deliveries(messages, batch=4)
    assert [len(d.content["ticks"]) for d in deliveries] == [3, 2, 5, 2]
    assert [[m.id for m in d.sources] for d in deliveries] == [
        ["id0"],
        ["id1"],
        ["id2"],
        ["id3", "id4"],
    ]


def test_plan_deliveries_rejects_bad_batch() -> None:
    """A batch size below one is refused with the value quoted."""
    with pytest.raises(ValueError, match="got 0"):
        plan_deliveries([], batch=0)
