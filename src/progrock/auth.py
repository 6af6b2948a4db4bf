"""Token authentication: who a client is when it sends a token, not a session cookie.

``PROGROCK["AUTHENTICATORS"]`` lists dotted paths, tried in order. Each names an
*authenticator*: a callable taking the token (a string) and returning the user
it names, or raising :class:`~progrock.exceptions.InvalidToken` saying why (a
class is instantiated once, without arguments). Two ship here:

* :class:`DRFTokenAuthenticator`: Django REST framework's ``authtoken`` keys;
* :class:`SignedTokenAuthenticator`: short-lived tokens that :func:`issue_token`
  signs with ``SECRET_KEY`` (no table, nothing to revoke: they expire).

A token's user owns tasks exactly as the same user logged in by session does
(``user:<pk>``, :mod:`progrock.permissions`). The socket, the HTTP API and the
terminal client use :func:`owner_for_token`; docs/howto-tokens.md shows how.
Everything here is synchronous (it reads the database): call it from a thread.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any, Final, Protocol

from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from progrock import permissions
from progrock.conf import progrock_settings
from progrock.exceptions import ImproperlyConfigured, InvalidToken, ProtocolError
from progrock.protocol import check_token

#: The salt of signed tokens: a signature made for anything else never passes.
SIGNED_TOKEN_SALT: Final = "progrock.auth.SignedTokenAuthenticator"
#: Signed tokens separate their parts with "." (":" is no HTTP token character,
#: so could not travel in Sec-WebSocket-Protocol).
SIGNED_TOKEN_SEP: Final = "."


class Authenticator(Protocol):
    """Takes a token, returns its user; raises :class:`InvalidToken` if it names none."""

    def __call__(self, token: str) -> Any: ...


def _active(user: Any, what: str) -> Any:
    if not getattr(user, "is_active", True):
        raise InvalidToken(f"the {what}'s user is inactive")
    return user


class DRFTokenAuthenticator:
    """Django REST framework's tokens: the ``rest_framework.authtoken`` key's user.

    Needs ``rest_framework.authtoken`` in ``INSTALLED_APPS`` (a system check
    says so when it is missing).
    """

    def __call__(self, token: str) -> Any:
        try:
            from rest_framework.authtoken.models import Token
        except ImportError as exc:  # the system check progrock.E009 says it first
            raise ImproperlyConfigured(
                "progrock.auth.DRFTokenAuthenticator needs Django REST framework "
                f"(pip install djangorestframework): {exc}"
            ) from exc
        try:
            row = Token.objects.select_related("user").get(key=token)
        except Token.DoesNotExist:
            raise InvalidToken("unknown DRF token") from None
        return _active(row.user, "DRF token")


def _signer() -> signing.TimestampSigner:
    # SECRET_KEY signs, SECRET_KEY_FALLBACKS still verify (Django's key rotation).
    return signing.TimestampSigner(salt=SIGNED_TOKEN_SALT, sep=SIGNED_TOKEN_SEP)


class SignedTokenAuthenticator:
    """Tokens from :func:`issue_token`, valid for :attr:`max_age` seconds.

    A token is the user's primary key, a timestamp and a signature made with
    ``SECRET_KEY``: nothing is stored, and it cannot be revoked before it
    expires, so keep ``max_age`` short. For another lifetime, subclass::

        class HourTokens(SignedTokenAuthenticator):
            max_age = 3600
    """

    max_age: float = 300.0

    def __call__(self, token: str) -> Any:
        try:
            pk = _signer().unsign(token, max_age=timedelta(seconds=self.max_age))
        except signing.SignatureExpired:
            raise InvalidToken(f"signed token expired (valid for {self.max_age:g} s)") from None
        except signing.BadSignature:
            raise InvalidToken("not a signed token of this server") from None
        model = get_user_model()
        try:
            user = model._default_manager.get(pk=pk)
        except (model.DoesNotExist, ValueError, ValidationError):
            raise InvalidToken("the signed token's user no longer exists") from None
        return _active(user, "signed token")


def issue_token(user: Any) -> str:
    """A signed token for ``user``, for :class:`SignedTokenAuthenticator`."""
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        raise ValueError(f"a token is issued for a saved, authenticated user, got {user!r}")
    return _signer().sign(str(user.pk))


@cache
def _load(paths: tuple[str, ...]) -> tuple[Authenticator, ...]:
    loaded = []
    for path in paths:
        try:
            found = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"PROGROCK['AUTHENTICATORS'] names {path!r}, which cannot be imported: {exc}"
            ) from exc
        authenticator = found() if isinstance(found, type) else found
        if not callable(authenticator):
            raise ImproperlyConfigured(
                f"PROGROCK['AUTHENTICATORS'] names {path!r}, which is not callable"
            )
        loaded.append(authenticator)
    return tuple(loaded)


def authenticators() -> tuple[Authenticator, ...]:
    """The authenticators ``PROGROCK["AUTHENTICATORS"]`` names, in order."""
    return _load(progrock_settings.AUTHENTICATORS)


def authenticate(token: object) -> Any:
    """The user ``token`` names: the first authenticator's that accepts it.

    Raises :class:`InvalidToken` with every authenticator's reason (never the
    token itself), and when there is no authenticator: a server that takes no
    tokens refuses them, it never treats their bearer as anonymous.
    """
    try:
        text = check_token(token)
    except ProtocolError as exc:
        raise InvalidToken(exc.detail) from None
    chain = authenticators()
    if not chain:
        raise InvalidToken("this server takes no tokens (PROGROCK['AUTHENTICATORS'] is empty)")
    reasons = []
    for authenticator in chain:
        try:
            user = authenticator(text)
        except InvalidToken as exc:
            reasons.append(str(exc))
            continue
        if user is None or not getattr(user, "is_authenticated", False):
            reasons.append(f"{authenticator!r} named no authenticated user")
            continue
        return user
    raise InvalidToken("; ".join(reasons))


def owner_for_token(token: object) -> str:
    """The owner string of ``token``'s user: the one its session would give."""
    user = authenticate(token)
    owner = permissions.owner_for_user_or_session(user, None)
    if owner is None:  # pragma: no cover - authenticate() returns authenticated users only
        raise InvalidToken("the token names no user")
    return owner
