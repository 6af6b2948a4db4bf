"""Token authentication: where tokens are found, the two authenticators, and the chain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.test import override_settings

from progrock import auth, permissions
from progrock.exceptions import ImproperlyConfigured, InvalidToken
from progrock.protocol import MAX_TOKEN_LENGTH
from progrock.web import tokens

SIGNED = "progrock.auth.SignedTokenAuthenticator"
DRF = "progrock.auth.DRFTokenAuthenticator"


def make_user(name: str = "ada", **fields: Any) -> Any:
    return get_user_model().objects.create_user(name, password="x", **fields)


@pytest.fixture
def signed_only() -> Iterator[None]:
    with override_settings(PROGROCK={"AUTHENTICATORS": [SIGNED]}):
        yield


def issued_ago(user: Any, seconds: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """A signed token for ``user`` as if issued ``seconds`` ago (no sleeping)."""
    then = signing.b62_encode(int(time.time()) - seconds)
    with monkeypatch.context() as patch:
        patch.setattr(signing.TimestampSigner, "timestamp", lambda self: then)
        return auth.issue_token(user)


# -- where a token is found (pure) ---------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (
            "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
            "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
        ),
        ("Bearer 5.1tT2xk.abc-_", "5.1tT2xk.abc-_"),
        ("bearer  spaced ", "spaced"),
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", None),
    ],
)
def test_the_authorization_header_gives_token_or_bearer_tokens_only(
    header: str | None, token: str | None
) -> None:
    """Token and Bearer (any case) carry a token; no header or another scheme is none."""
    assert tokens.header_token(header) == token


@pytest.mark.parametrize("header", ["Token", "Bearer ", "Token a b"])
def test_a_token_scheme_without_one_token_is_refused(header: str) -> None:
    """Our scheme with no token, or with two, is an invalid token, not no token."""
    with pytest.raises(InvalidToken, match=r"must be '(Token|Bearer) <token>'"):
        tokens.header_token(header)


def test_the_subprotocol_token_follows_progrock_token() -> None:
    """The token is the item after progrock.token; other subprotocols are ignored."""
    assert tokens.subprotocol_token(["chat", "progrock.token", "abc"]) == "abc"
    assert tokens.subprotocol_token(["chat"]) is None
    assert tokens.subprotocol_token([]) is None
    with pytest.raises(InvalidToken, match="no token after it"):
        tokens.subprotocol_token(["progrock.token"])


def test_a_close_reason_fits_a_close_frame() -> None:
    """A long detail is cut to 123 bytes (RFC 6455), multi-byte characters whole."""
    assert tokens.close_reason("short") == "short"
    cut = tokens.close_reason("é" * 200)
    assert len(cut.encode()) <= 123 and cut.endswith("...")


# -- signed tokens -------------------------------------------------------------


@pytest.mark.django_db
def test_a_signed_token_names_its_user_and_the_user_s_owner(signed_only: None) -> None:
    """issue_token's token authenticates as its user, owner user:<pk> as by session."""
    user = make_user()
    token = auth.issue_token(user)
    assert ":" not in token and " " not in token  # fits Sec-WebSocket-Protocol
    assert auth.authenticate(token) == user
    assert (
        auth.owner_for_token(token)
        == permissions.owner_for_user_or_session(user, "s")
        == (f"user:{user.pk}")
    )


@pytest.mark.django_db
def test_an_expired_signed_token_is_refused(
    signed_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older than max_age (300 s): refused, saying it expired; younger: accepted."""
    user = make_user()
    assert auth.authenticate(issued_ago(user, 290, monkeypatch)) == user
    with pytest.raises(InvalidToken, match=r"signed token expired \(valid for 300 s\)"):
        auth.authenticate(issued_ago(user, 310, monkeypatch))


@pytest.mark.django_db
def test_a_subclass_sets_another_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_age is read at verification: a subclass with 3600 takes an hour-old token."""
    user = make_user()
    token = issued_ago(user, 1000, monkeypatch)
    hour = type("HourTokens", (auth.SignedTokenAuthenticator,), {"max_age": 3600})()
    assert hour(token) == user
    with pytest.raises(InvalidToken, match="expired"):
        auth.SignedTokenAuthenticator()(token)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "forge",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        lambda token: "9" + token[token.index(".") :],  # another user's pk, same signature
        lambda token: signing.TimestampSigner(salt="other", sep=".").sign(token.split(".")[0]),
        lambda token: "made-up",
    ],
    ids=["tampered-signature", "other-pk", "other-salt", "made-up"],
)
def test_a_forged_signed_token_is_refused(signed_only: None, forge: Any) -> None:
    """A token this server did not sign for this purpose names nobody."""
    token = auth.issue_token(make_user())
    with pytest.raises(InvalidToken, match="not a signed token of this server"):
        auth.authenticate(forge(token))


@pytest.mark.django_db
def test_a_signed_token_of_an_inactive_or_deleted_user_is_refused(signed_only: None) -> None:
    """A user deactivated or deleted since the token was issued: refused."""
    user, gone = make_user(), make_user("bob")
    token, gone_token = auth.issue_token(user), auth.issue_token(gone)
    user.is_active = False
    user.save()
    gone.delete()
    with pytest.raises(InvalidToken, match="user is inactive"):
        auth.authenticate(token)
    with pytest.raises(InvalidToken, match="no longer exists"):
        auth.authenticate(gone_token)


def test_no_token_is_issued_for_an_anonymous_user() -> None:
    """issue_token refuses a user that is not a saved, authenticated one."""
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(ValueError, match="saved, authenticated user"):
        auth.issue_token(AnonymousUser())


# -- DRF tokens ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_drf_token_names_its_user() -> None:
    """A rest_framework.authtoken key authenticates as its user; unknown and inactive fail."""
    from rest_framework.authtoken.models import Token

    user = make_user()
    key = Token.objects.create(user=user).key
    with override_settings(PROGROCK={"AUTHENTICATORS": [DRF]}):
        assert auth.owner_for_token(key) == f"user:{user.pk}"
        with pytest.raises(InvalidToken, match="unknown DRF token"):
            auth.authenticate("0" * 40)
        user.is_active = False
        user.save()
        with pytest.raises(InvalidToken, match="DRF token's user is inactive"):
            auth.authenticate(key)


# -- the chain -----------------------------------------------------------------


def test_without_authenticators_every_token_is_refused() -> None:
    """AUTHENTICATORS empty: a token is refused (never taken as anonymous)."""
    with override_settings(PROGROCK={}), pytest.raises(InvalidToken, match="takes no tokens"):
        auth.authenticate("anything")


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("", "non-empty string, got an empty string"),
        (None, "got NoneType"),
        ("x" * (MAX_TOKEN_LENGTH + 1), "more than 4096"),
    ],
    ids=["empty", "none", "too-long"],
)
def test_a_token_that_cannot_be_one_is_refused_unread(
    signed_only: None, token: object, words: str
) -> None:
    """Empty, not a string or too long: refused before any authenticator runs."""
    with pytest.raises(InvalidToken, match=words):
        auth.authenticate(token)


@pytest.mark.django_db
def test_the_chain_tries_each_authenticator_and_gives_every_reason() -> None:
    """The first authenticator that accepts wins; if none does, each says why."""
    user = make_user()
    with override_settings(PROGROCK={"AUTHENTICATORS": [DRF, SIGNED]}):
        assert auth.authenticate(auth.issue_token(user)) == user
        with pytest.raises(InvalidToken) as refused:
            auth.authenticate("made-up")
    assert str(refused.value) == "unknown DRF token; not a signed token of this server"
    assert "made-up" not in str(refused.value)  # never the token itself


def test_an_authenticator_that_cannot_be_imported_is_improperly_configured() -> None:
    """A wrong dotted path names itself when the first token arrives."""
    with (
        override_settings(PROGROCK={"AUTHENTICATORS": ["progrock.auth.Nope"]}),
        pytest.raises(ImproperlyConfigured, match=r"'progrock\.auth\.Nope', which cannot be"),
    ):
        auth.authenticate("t")
