"""The example project's token view (POST /token/) and token page (GET /tokens/)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from progrock import auth

pytestmark = pytest.mark.django_db

SIGNED = {"AUTHENTICATORS": ["progrock.auth.SignedTokenAuthenticator"]}


def test_the_token_view_issues_a_working_token_to_a_logged_in_user() -> None:
    """A logged-in user's POST gets a signed token that authenticates as that user."""
    user = get_user_model().objects.create_user("ada", password="x")
    client = Client()
    client.force_login(user)
    answer = client.post("/token/")
    assert answer.status_code == 200 and answer.json()["expires_in"] == 300
    with override_settings(PROGROCK=SIGNED):
        assert auth.authenticate(answer.json()["token"]) == user


def test_the_token_view_refuses_anonymous_visitors_and_gets() -> None:
    """No user: 401, no token; GET: 405; a cross-site POST: Django's CSRF 403."""
    assert Client().post("/token/").status_code == 401
    assert Client().get("/token/").status_code == 405
    assert Client(enforce_csrf_checks=True).post("/token/").status_code == 403


def test_the_token_page_creates_no_session() -> None:
    """GET /tokens/ sets no session cookie: the page's task can only be the token's user's."""
    response = Client().get("/tokens/")
    assert response.status_code == 200 and b'id="token"' in response.content
    assert "sessionid" not in response.cookies
