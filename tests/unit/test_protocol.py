"""The pure protocol: parsing client frames, building server messages, task states."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progrock import protocol as p
from progrock.exceptions import InvalidTransition, ProtocolError

TASK = str(uuid.uuid4())


DEFAULT_LIMITS = p.Limits()


def code_of(frame: str | bytes, limits: p.Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(ProtocolError) as info:
        p.parse_client_frame(frame, limits)
    return info.value.code


def test_classic_start_is_a_start_of_the_default_kind() -> None:
    """The 2017 demo's bare {"action": "start"} starts the default kind with no params."""
    request = p.parse_client_frame('{"action": "start"}')
    assert request == p.Start(kind="rock", params={}, ref=None)


def test_start_with_kind_params_and_ref() -> None:
    """kind, params and ref are carried through."""
    request = p.parse_client_frame(
        json.dumps({"action": "start", "kind": "hash", "params": {"mb": 2}, "ref": "r1"})
    )
    assert request == p.Start(kind="hash", params={"mb": 2}, ref="r1")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"no": "action"}', "bad_message"),
        ('{"action": 5}', "bad_message"),
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": "start", "kind": "nope"}', "unknown_kind"),
        ('{"action": "start", "kind": 3}', "invalid_field"),
        ('{"action": "start", "params": [1]}', "invalid_field"),
        ('{"action": "start", "ref": true}', "invalid_field"),
        ('{"action": "start", "ref": {"a": 1}}', "invalid_field"),
        ('{"action": "subscribe"}', "invalid_field"),
        ('{"action": "subscribe", "task_id": "abc"}', "invalid_field"),
        ('{"action": "cancel", "task_id": 12}', "invalid_field"),
    ],
)
def test_bad_frames_get_precise_codes(frame: str, code: str) -> None:
    """Each kind of malformed frame maps to its documented error code."""
    assert code_of(frame) == code


def test_binary_frames_are_refused() -> None:
    """Binary frames get binary_not_supported."""
    assert code_of(b'{"action": "start"}') == "binary_not_supported"


def test_frame_and_params_limits() -> None:
    """Frames over MAX_FRAME_BYTES and params over MAX_PARAMS_BYTES are refused."""
    limits = p.Limits(max_frame_bytes=100, max_params_bytes=20)
    assert code_of("x" * 101, limits) == "frame_too_large"
    big = json.dumps({"action": "start", "params": {"a": "y" * 30}})
    assert code_of(big, limits) == "params_too_large"


def test_errors_quote_the_bad_value() -> None:
    """Error details quote what was wrong."""
    with pytest.raises(ProtocolError) as info:
        p.parse_client_frame('{"action": "subscribe", "task_id": "not-a-uuid"}')
    assert "'not-a-uuid'" in info.value.detail
    assert p.error_from(info.value)["action"] == "subscribe"


def test_ref_is_echoed_in_errors_of_start() -> None:
    """An error about a start carries the client's ref."""
    with pytest.raises(ProtocolError) as info:
        p.parse_client_frame('{"action": "start", "kind": "zzz", "ref": 7}')
    assert p.error_from(info.value)["ref"] == 7


def test_task_ids_are_canonicalised() -> None:
    """Upper-case UUIDs are accepted and normalised."""
    request = p.parse_client_frame(json.dumps({"action": "subscribe", "task_id": TASK.upper()}))
    assert request == p.Subscribe(TASK)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_value_parses_or_raises_protocol_error(value: object) -> None:
    """No JSON value makes the parser raise anything but ProtocolError."""
    try:
        p.parse_client_frame(json.dumps(value))
    except ProtocolError as exc:
        assert exc.code in p.ERROR_CODES


@given(
    st.dictionaries(
        st.sampled_from(["action", "kind", "params", "ref", "task_id"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=50)
        | st.sampled_from(p.ACTIONS)
        | st.just(TASK)
        | st.dictionaries(st.text(), st.integers()),
    )
)
def test_near_valid_messages_parse_or_raise_protocol_error(value: dict[str, object]) -> None:
    """Messages built from valid parts in wrong combinations never crash the parser."""
    try:
        request = p.parse_client_message(value)
    except ProtocolError as exc:
        assert exc.code in p.ERROR_CODES
    else:
        assert request.action == value["action"]


def test_state_machine() -> None:
    """queued -> running -> terminal, and nothing leaves a terminal state."""
    assert p.check_transition("queued", "running") is p.Status.RUNNING
    assert p.check_transition("running", "succeeded") is p.Status.SUCCEEDED
    assert p.check_transition("queued", "cancelled") is p.Status.CANCELLED
    for terminal in p.TERMINAL:
        for other in p.Status:
            with pytest.raises(InvalidTransition):
                p.check_transition(terminal, other)
    with pytest.raises(InvalidTransition):
        p.check_transition("running", "queued")


def test_terminal_messages_keep_the_classic_keys() -> None:
    """complete has complete: true and progress 100; failed carries error code+detail."""
    done = p.terminal_message(TASK, p.Status.SUCCEEDED, result={"x": 1})
    assert done["complete"] is True and done["progress"] == 100 and done["result"] == {"x": 1}
    failed = p.terminal_message(
        TASK, p.Status.FAILED, progress=42.5, error=p.failure("backend_failed", "boom")
    )
    assert failed["error"] == {"code": "backend_failed", "detail": "boom"}
    assert failed["progress"] == 42.5
    with pytest.raises(ValueError):
        p.terminal_message(TASK, p.Status.RUNNING)


def test_frame_parts_splice_seq_into_valid_json() -> None:
    """head + seq + tail is the message as JSON, with seq as the third key."""
    message = p.progress_message(TASK, 12.345, "half", eta_s=3.0, rate=1.5)
    head, tail = p.frame_parts(message)
    decoded = json.loads(head + "17" + tail)
    assert list(decoded)[:3] == ["type", "task_id", "seq"]
    assert decoded == {**message, "seq": 17, "progress": 12.35}


def test_fanout_framing_round_trip() -> None:
    """The "<seq> <flag> <json>" framing parses back; garbage raises ValueError."""
    assert p.parse_fanout('5 T {"a": 1}') == (5, "T", '{"a": 1}')
    with pytest.raises(ValueError):
        p.parse_fanout("nonsense")


def test_snapshot_and_terminal_of_a_view() -> None:
    """A finished task's view gives a snapshot and a terminal message of equal seq."""
    view = p.TaskView(TASK, p.Status.CANCELLED, "rock", seq=9, progress=30)
    snap = view.snapshot()
    assert snap["type"] == "snapshot" and snap["status"] == "cancelled" and snap["seq"] == 9
    assert set(p.SNAPSHOT_FIELDS) <= set(snap)
    terminal = view.terminal()
    assert terminal is not None and terminal["type"] == "cancelled" and terminal["seq"] == 9
    assert p.TaskView(TASK, p.Status.RUNNING, "rock").terminal() is None


def test_estimate_rate_and_eta() -> None:
    """Rate is percent per second, smoothed; ETA is what is left over the rate."""
    first = p.estimate(progress=10, now=1.0, last_progress=0, last_time=0.0, last_rate=None)
    assert first.rate == 10 and first.eta_s == 9
    second = p.estimate(progress=30, now=2.0, last_progress=10, last_time=1.0, last_rate=10)
    assert second.rate == pytest.approx(13.0)
    stalled = p.estimate(progress=30, now=2.0, last_progress=30, last_time=2.0, last_rate=None)
    assert stalled.rate is None and stalled.eta_s is None


def test_backoff_is_exponential_and_capped() -> None:
    """1, 2, 4, ... times the base, never more than the cap."""
    assert [p.backoff(n, 0.5, 3) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3, 3]
    with pytest.raises(ValueError):
        p.backoff(0, 1, 2)


def test_error_message_refuses_unknown_codes() -> None:
    """Only documented error codes can be sent."""
    with pytest.raises(ValueError):
        p.error_message("whatever", "x")
    with pytest.raises(ValueError):
        p.failure("whatever", "x")


# -- values every hop can carry (poison frames) -------------------------------------


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ('{"action": "start", "ref": ' + str(2**70) + "}", "ref must be an integer within"),
        ('{"action": "start", "ref": "\\ud800"}', "ref must be valid Unicode"),
        (
            '{"action": "start", "params": {"n": ' + str(-(2**64)) + "}}",
            "params.n must be an integer",
        ),
        ('{"action": "start", "params": {"s": ["ok", "\\udc00"]}}', "params.s[1] must be valid"),
        ('{"action": "start", "params": {"\\ud800": 1}}', "params key '\\ud800' must be valid"),
        ('{"action": "start", "params": {"f": 1e400}}', "params.f must be a finite number"),
        ('{"action": "start", "params": {"z": "\\u0000"}}', "params.z must not contain NUL"),
        (
            '{"action": "start", "params": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
            "deeper than 32 levels",
        ),
        ('{"action": "start", "kind": "\\ud800"}', "kind must be valid Unicode"),
        ('{"action": "start", "kind": "' + "k" * 101 + '"}', "kind must be at most 100"),
    ],
    ids=[
        "ref-int-70-bits",
        "ref-lone-surrogate",
        "params-int-below-int64",
        "params-lone-surrogate-in-list",
        "params-lone-surrogate-key",
        "params-overflowing-float",
        "params-nul",
        "params-too-deep",
        "kind-lone-surrogate",
        "kind-too-long",
    ],
)
def test_poison_values_are_refused_naming_the_field(frame: str, words: str) -> None:
    """Values the channel layer, database or backend cannot hold are invalid_field,
    with the detail naming where they are."""
    with pytest.raises(ProtocolError) as info:
        p.parse_client_frame(frame, p.Limits(kinds=None))
    assert info.value.code == "invalid_field"
    assert words in info.value.detail, info.value.detail
    assert info.value.context.get("action") == "start"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_bad_json(constant: str) -> None:
    """NaN and Infinity, which Python's decoder accepts, are not JSON: bad_json."""
    assert code_of('{"action": "start", "params": {"x": ' + constant + "}}") == "bad_json"


def test_a_refused_ref_is_not_echoed() -> None:
    """An error about ref itself does not carry the bad ref back."""
    with pytest.raises(ProtocolError) as info:
        p.parse_client_frame('{"action": "start", "ref": ' + str(2**70) + "}")
    assert "ref" not in p.error_from(info.value)


def test_values_at_the_limits_are_accepted() -> None:
    """The largest and smallest 64-bit integers and any valid Unicode pass."""
    frame = json.dumps(
        {
            "action": "start",
            "ref": 2**63 - 1,
            "params": {"lo": -(2**63), "text": "🎸 ünïcödé", "deep": [[[[1]]]]},
        }
    )
    request = p.parse_client_frame(frame)
    assert isinstance(request, p.Start) and request.ref == 2**63 - 1


def test_failure_details_hide_addresses() -> None:
    """A failure's detail keeps what happened and loses where the backend lives."""
    error = p.failure(
        "backend_unreachable",
        "backend http://10.0.0.7:8001 unreachable: Cannot connect to host 10.0.0.7:8001",
    )
    assert "10.0.0.7" not in error["detail"] and "8001" not in error["detail"]
    assert "unreachable" in error["detail"] and "Cannot connect" in error["detail"]
