"""progrock.contrib._guard: which library versions a contrib part accepts, and its one warning."""

from __future__ import annotations

import logging
import warnings

import pytest

from progrock.contrib._guard import Guard, missing_members, release


def guard() -> Guard:
    return Guard("progrock.contrib.example", "Lib", first="26.10.0", before="27")


def test_release_reads_plain_releases_only() -> None:
    """A plain release parses to numbers; pre-releases, local versions and non-strings do not."""
    assert release("26.10.0") == (26, 10, 0)
    assert release("4") == (4,)
    for odd in ("27.1.0rc1", "4.3.0+patched", "26.10.dev0", "", "v26.10.0", None, 26):
        assert release(odd) is None, odd


@pytest.mark.parametrize(
    ("version", "covered"),
    [
        ("26.10.0", True),
        ("26.10", True),  # the same release, written short
        ("26.10.7", True),
        ("26.12.1", True),
        ("26.9.9", False),
        ("27", False),
        ("27.0.0", False),
        ("27.1.0", False),
        ("26.10.1rc1", False),  # a pre-release is not a tested release
        (None, False),  # no __version__ at all
    ],
)
def test_covers_the_tested_range_only(version: object, covered: bool) -> None:
    """The range includes its first release and stops before its bound."""
    assert guard().covers(version) is covered


@pytest.mark.parametrize(
    ("first", "before", "message"),
    [
        ("26.x", "27", "first must be a release like '26.10.0', got '26.x'"),
        ("26.10.0", "", "before must be a release like '27', got ''"),
        ("27", "26.10", "first must be below before, got '27' and '26.10'"),
        ("4.3", "4.3.0", "first must be below before, got '4.3' and '4.3.0'"),
    ],
)
def test_a_wrong_range_is_refused_with_a_clear_message(
    first: str, before: str, message: str
) -> None:
    """A range that cannot be a range says which bound is wrong, quoting it."""
    with pytest.raises(ValueError) as raised:
        Guard("progrock.contrib.example", "Lib", first=first, before=before)
    assert str(raised.value) == message


def test_a_tested_version_is_allowed_without_a_word(caplog: pytest.LogCaptureFixture) -> None:
    """In range and nothing missing: True, no warning, no log line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert guard().allows("26.10.0") is True
    assert caught == []
    assert caplog.records == []


def test_an_untested_version_warns_once_naming_library_version_and_range(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One RuntimeWarning and one log line, however often the part asks; always refused."""
    one = guard()
    caplog.set_level(logging.WARNING, logger="progrock.contrib")
    with pytest.warns(RuntimeWarning) as caught:
        assert one.allows("27.1.0") is False
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert one.allows("27.1.0") is False
        assert one.allows("28.0.0") is False
    assert again == []
    assert len(caught) == 1
    text = str(caught[0].message)
    for part in ("progrock.contrib.example stays off", "Lib '27.1.0'", ">=26.10.0, <27"):
        assert part in text
    assert [r.getMessage() for r in caplog.records] == [text]
    assert caplog.records[0].levelno == logging.WARNING


def test_a_missing_member_is_refused_and_named() -> None:
    """On a tested version, a member the part needs that is gone still keeps it off."""
    with pytest.warns(RuntimeWarning) as caught:
        allowed = guard().allows("26.10.0", ["lib.Thing._buffer", "lib.helper"])
    assert allowed is False
    text = str(caught[0].message)
    assert "Lib '26.10.0' has no lib.Thing._buffer, lib.helper, which it needs" in text


def test_the_warning_says_what_staying_off_means() -> None:
    """A part can say what its fallback is (the layer: channels_redis's own class)."""
    layer_like = Guard("p", "Lib", first="1.0", before="2", off="it behaves as Lib's own class")
    with pytest.warns(RuntimeWarning, match="Nothing breaks: it behaves as Lib's own class"):
        layer_like.allows("2.0")
    with pytest.warns(RuntimeWarning, match="runs on Lib's own code, unpatched"):
        guard().allows("1.0")


def test_missing_members_lists_what_an_object_lacks() -> None:
    """Only the absent names come back, qualified by where they were looked for."""

    class Thing:
        present = 1

    assert missing_members(Thing, ["present", "absent"], "mod.Thing") == ["mod.Thing.absent"]
    assert missing_members(Thing, ["present"], "mod.Thing") == []
