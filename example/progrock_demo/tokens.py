"""Token authentication in the demo (docs/howto-tokens.md).

* ``POST /token/``: the example view that issues a signed short-lived token to
  a logged-in user, for a single-page or mobile app to give ProgRock instead
  of a session cookie (copy it into your project).
* ``GET /tokens/``: a page that creates no session and starts a task with a
  pasted token: its socket and its HTTP fallback are authenticated by the
  token alone.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from progrock.auth import SignedTokenAuthenticator, issue_token


@require_POST
def issue_token_view(request: HttpRequest) -> JsonResponse:
    """A signed token for the logged-in user (CSRF-checked, as any session POST)."""
    if not request.user.is_authenticated:
        return JsonResponse({"detail": "log in first"}, status=401)
    return JsonResponse(
        {"token": issue_token(request.user), "expires_in": SignedTokenAuthenticator.max_age}
    )


@require_GET
def tokens_page(request: HttpRequest) -> HttpResponse:
    """Start a task with a pasted token (no session is created for this page)."""
    return render(request, "progrock_demo/tokens.html")
