"""docs/http-api.md and the HTTP API describe the same endpoints and errors."""

from __future__ import annotations

import re
from pathlib import Path

from progrock import urls
from progrock.protocol import ERROR_CODES
from progrock.web.guards import HTTP_ERROR_CODES
from progrock.web.views import STATUS

DOC = (Path(__file__).parents[2] / "docs" / "http-api.md").read_text()


def section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def test_every_error_code_is_documented_with_its_status() -> None:
    """The error table lists every code the API answers, each with its HTTP status."""
    rows = dict(
        (code, int(status))
        for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", section("## 3."), re.M)
    )
    socket_only = {"unknown_action", "binary_not_supported", "too_many_sockets"}
    assert set(rows) == (set(ERROR_CODES) - socket_only) | set(HTTP_ERROR_CODES)
    for code, status in STATUS.items():
        assert rows[code] == status, code


def test_every_endpoint_is_documented() -> None:
    """The endpoint table has a row for every route of progrock.urls."""
    table = section("## 2. Endpoints")
    for pattern in urls.urlpatterns:
        route = str(pattern.pattern)
        if route.startswith("^"):  # the catch-all: documented as not_found
            continue
        documented = re.sub(r"<[^>]+>", "<id>", route)
        assert f" {documented}`" in table, route
