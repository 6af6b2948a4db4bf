"""Hostile input end to end: poison frames, frames the server cannot read, fuzz.

Every frame an attacker can send gets its documented answer (docs/protocol.md)
and harms nobody else. Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import websockets

from progrock.exceptions import ProtocolError
from progrock.local.stack import Stack
from progrock.protocol import Limits, parse_client_frame
from tests.e2e.fuzz_frames import FrameGenerator, unreadable
from tests.e2e.wsclient import TERMINAL, Client

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

FAST = {"kind": "rock", "params": {"interval_ms": 20}}  # done in about 0.7 s

# (frame, expected error code): each passes the JSON decoder and, before the
# values check, passed _parse_start too and then broke the channel layer for
# every start sent with it.
POISONS: list[tuple[str, str]] = [
    ('{"action": "start", "ref": ' + str(2**70) + "}", "invalid_field"),
    ('{"action": "start", "params": {"n": ' + str(2**70) + "}}", "invalid_field"),
    ('{"action": "start", "ref": "\\ud800"}', "invalid_field"),
    ('{"action": "start", "params": {"s": "\\ud800"}}', "invalid_field"),
    ('{"action": "start", "params": {"\\udfff": 1}}', "invalid_field"),
    (
        '{"action": "start", "params": ' + "[" * 0 + '{"a": ' * 600 + "1" + "}" * 600 + "}",
        "invalid_field",
    ),
    ('{"action": "start", "params": {"x": NaN}}', "bad_json"),
    ('{"action": "start", "params": {"x": 1e400}}', "invalid_field"),
    ('{"action": "start", "params": {"x": "\\u0000"}}', "invalid_field"),
]


async def all_terminal(client: Client, task_ids: set[str], timeout: float = 60) -> dict[str, str]:
    """The terminal message type of each of ``task_ids`` (read by one reader)."""
    ends = {
        m["task_id"]: m["type"]
        for m in client.received
        if m.get("task_id") in task_ids and m.get("type") in TERMINAL
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(ends) < len(task_ids):
        message = await client.recv(max(0.01, deadline - loop.time()))
        if message.get("task_id") in task_ids and message.get("type") in TERMINAL:
            ends[message["task_id"]] = message["type"]
    return ends


async def test_poison_frames_harm_no_bystander(stack: Stack) -> None:
    """10 sockets start tasks in the same few ms as an attacker sends each poison
    kind: every bystander's start goes through and completes, the attacker gets its
    error (invalid_field or bad_json) and its socket stays open and usable."""
    bystanders = [await Client.connect(stack.url) for _ in range(10)]
    attacker = await Client.connect(stack.url)
    started: list[tuple[Client, str]] = []
    for round_no, (poison, code) in enumerate(POISONS):
        sends = [
            b.send({"action": "start", **FAST, "ref": f"{round_no}-{i}"})
            for i, b in enumerate(bystanders)
        ]
        await asyncio.gather(*sends[:5], attacker.send(poison), *sends[5:])
        answer = await attacker.recv(timeout=10)
        assert answer["type"] == "error" and answer["code"] == code, (poison[:60], answer)
        for i, bystander in enumerate(bystanders):
            first = await bystander.recv_type("started", "error", timeout=15)
            assert first["type"] == "started", (poison[:60], first)
            assert first["ref"] == f"{round_no}-{i}"
            started.append((bystander, first["task_id"]))
    finals = await asyncio.gather(
        *(all_terminal(b, {t for c, t in started if c is b}) for b in bystanders)
    )
    assert [t for f in finals for t in f.values()] == ["complete"] * len(started)
    task_id = await attacker.start(**FAST)  # the attacker's socket still works
    assert (await attacker.until_terminal(task_id))["type"] == "complete"
    for client in [*bystanders, attacker]:
        assert client.ws.close_code is None
        await client.close()


async def test_frames_between_the_limits_are_answered(stack: Stack) -> None:
    """A frame over MAX_FRAME_BYTES but within the web server's 1 MiB is answered
    frame_too_large, and the socket stays usable."""
    client = await Client.connect(stack.url)
    await client.send('{"action": "start", "pad": "' + "x" * 900_000 + '"}')
    answer = await client.recv(timeout=10)
    assert answer["type"] == "error" and answer["code"] == "frame_too_large", answer
    await client.send({"action": "list"})
    assert (await client.recv(timeout=10))["type"] == "tasks"
    await client.close()


@pytest.mark.parametrize(
    ("frame", "text", "close_code"),
    [
        (b"x" * (1024 * 1024 + 1), True, 1009),
        (b'{"action": "start", "ref": "\xff\xfe"}', True, 1007),
    ],
    ids=["over-1-MiB", "invalid-UTF-8"],
)
async def test_frames_the_server_cannot_read_close_with_their_code(
    stack: Stack, frame: bytes, text: bool, close_code: int
) -> None:
    """Past Daphne's 1 MiB limit: 1009; a text frame that is not UTF-8: 1007 (not a
    dropped connection); other sockets are not affected."""
    bystander = await Client.connect(stack.url)
    client = await Client.connect(stack.url)
    await client.ws.send(frame, text=text)
    with pytest.raises(websockets.ConnectionClosed):
        await client.recv(timeout=10)
    assert client.ws.close_code == close_code
    await bystander.send({"action": "list"})
    assert (await bystander.recv(timeout=10))["type"] == "tasks"
    await bystander.close()


async def test_another_origin_is_refused(stack: Stack) -> None:
    """A handshake from another port or scheme of the same host is refused (403)."""
    host = stack.url.removeprefix("http://")
    for origin in (f"http://{host.split(':')[0]}:1", f"https://{host}", "null"):
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(stack.ws_url, origin=origin)  # type: ignore[arg-type]
        assert info.value.response.status_code == 403, origin
    client = await Client.connect(stack.url)  # its own origin: accepted
    await client.close()


@pytest.mark.parametrize(
    "path",
    ["/static/..%2f..%2fetc/passwd", "/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/x"],
)
def test_crafted_static_paths_are_404(stack: Stack, path: str) -> None:
    """Static paths that climb out of the static folders are 404, not 500."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(stack.url + path, timeout=10)
    assert info.value.code == 404


# -- fuzz ------------------------------------------------------------------------

FUZZ_SEED = 20_261_207
FUZZ_SOCKETS = 20
FUZZ_UNREADABLE = 20  # frames the server cannot read, each on a socket of its own
FUZZ_FRAMES = 10_000
ANSWER_TYPES = {"error", "snapshot", "unsubscribed", "tasks", "started"}
# Codes a request that parses may still get from a healthy stack.
SERVING_CODES = {
    "start": {"too_many_tasks", "rate_limited"},
    "subscribe": {"forbidden"},
    "unsubscribe": set(),
    "cancel": {"forbidden", "not_cancellable"},
    "list": set(),
}
REPLY_TYPES = {
    "start": {"started", "failed"},
    "subscribe": {"snapshot"},
    "unsubscribe": {"unsubscribed"},
    "cancel": set(),
    "list": {"tasks"},
}


def is_answer(message: dict[str, Any], known: set[str]) -> bool:
    """A message that answers a request, not a later update of a task: the first
    message of a task this socket started (``started``, or ``failed`` when the
    backend refused it) answers the start."""
    kind = message.get("type")
    if kind == "failed":
        return message.get("task_id") not in known
    return kind in ANSWER_TYPES


async def fuzz_socket(stack: Stack, generator: FrameGenerator, count: int) -> list[str]:
    """Send ``count`` frames one after another; return every mismatch found."""
    client = await Client.connect(stack.url)
    own: list[str] = []
    known: set[str] = set()  # every task this socket has heard of
    problems: list[str] = []
    for _ in range(count):
        frame = generator.frame(own)
        try:
            request = parse_client_frame(frame, Limits())
            expected, action = None, request.action
        except ProtocolError as exc:
            expected, action = exc.code, None
        await client.ws.send(frame)
        shown = repr(frame[:80])
        try:
            answer = await client.recv(timeout=20)
            while not is_answer(answer, known):
                known.add(str(answer.get("task_id")))
                answer = await client.recv(timeout=20)
        except TimeoutError:
            problems.append(f"{shown}: no answer within 20 s (last: {client.received[-3:]})")
            break
        if "task_id" in answer:
            known.add(str(answer["task_id"]))
        if expected is not None:
            if answer.get("type") != "error" or answer.get("code") != expected:
                problems.append(f"{shown}: expected error {expected}, got {answer}")
        elif answer.get("type") == "error":
            if answer.get("code") not in SERVING_CODES[str(action)]:
                problems.append(f"{shown}: unexpected error {answer}")
        elif answer.get("type") not in REPLY_TYPES[str(action)]:
            problems.append(f"{shown}: {action} answered {answer}")
        if answer.get("type") in ("started", "failed"):
            own.append(answer["task_id"])
    assert client.ws.close_code is None, f"the server closed a fuzz socket: {client.ws.close_code}"
    await client.close()
    return problems


async def unreadable_socket(stack: Stack, rng: random.Random) -> str | None:
    frame, code = unreadable(rng)
    client = await Client.connect(stack.url)
    await client.ws.send(frame, text=True)
    try:
        message = await client.recv(timeout=20)
    except websockets.ConnectionClosed:
        pass
    else:
        return f"{frame[:40]!r}: answered {message} instead of closing"
    if client.ws.close_code != code:
        return f"{frame[:40]!r}: closed with {client.ws.close_code}, expected {code}"
    return None


@pytest.mark.timeout(240)
async def test_ten_thousand_fuzzed_frames_are_each_answered(stack: Stack) -> None:
    """10,000 seeded random and mutated frames over real sockets: every one gets its
    documented answer (what the pure parser says, or a request's reply), the frames
    the server cannot read get their close code, and no process dies."""
    before = stack.pids()
    per_socket = (FUZZ_FRAMES - FUZZ_UNREADABLE) // FUZZ_SOCKETS
    results = await asyncio.gather(
        *(
            fuzz_socket(stack, FrameGenerator(FUZZ_SEED + i), per_socket)
            for i in range(FUZZ_SOCKETS)
        )
    )
    rng = random.Random(FUZZ_SEED)
    closes = [await unreadable_socket(stack, rng) for _ in range(FUZZ_UNREADABLE)]
    problems = [p for found in results for p in found] + [c for c in closes if c]
    assert problems == [], f"{len(problems)} frames answered wrongly:\n" + "\n".join(problems[:20])
    assert per_socket * FUZZ_SOCKETS + FUZZ_UNREADABLE == FUZZ_FRAMES
    assert stack.pids() == before, "a process died (or was restarted) during the fuzz"
