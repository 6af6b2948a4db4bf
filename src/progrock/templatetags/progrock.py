"""ProgRock's template tags: the client script, and drop-in progress bars.

Like django-htmx, settings reach the JavaScript through ``data-*`` attributes:
``progrock.js`` reads ``data-progrock-url`` (the socket), ``data-progrock-api``
(the HTTP API, for the fallback when WebSockets are blocked) and
``data-progrock-csrf`` from the tag, and ``data-progrock-token`` when given a
``token=`` (docs/howto-tokens.md). See docs/template-tag.md.

    {% load progrock %}
    {% progrock_script %}                      {# socket at /prog/ #}
    {% progrock_script url="/custom/prog/" %}
    {% progrock_script token=token %}          {# authenticate with a token #}
    {% progrock_bar task_id %}                 {# a live bar for a task #}
    {% progrock_bar kind="rock" params=params label="Rock out" %}  {# a start button #}
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from progrock.conf import protocol_limits
from progrock.exceptions import ProtocolError
from progrock.protocol import Start, canonical_task_id, parse_client_message
from progrock.web import bar

register = template.Library()

DEFAULT_URL = "/prog/"
"""The WebSocket path the ProgRock consumer is routed at (docs/protocol.md, 1)."""

SCRIPT_PATH = "progrock/progrock.js"
BAR_SCRIPT_PATH = "progrock/progrock-bar.js"
BAR_STYLE_PATH = "progrock/progrock-bar.css"
_ASSETS_DONE = "_progrock_bar_assets"


def _check_url(tag: str, url: object) -> str:
    if not isinstance(url, str) or not url:
        raise template.TemplateSyntaxError(f"{tag} url must be a non-empty string, got {url!r}")
    return url


def api_prefix() -> str | None:
    """Where ``include("progrock.urls")`` is mounted ("/prog/api/"), or None if it is not."""
    try:
        follow = reverse("progrock:follow")
    except NoReverseMatch:
        return None
    return follow.removesuffix("follow/")


def _check_token(tag: str, token: object) -> str | None:
    if token is None or (isinstance(token, str) and token):
        return token
    raise template.TemplateSyntaxError(
        f"{tag} token must be a non-empty string or None, got {type(token).__name__}"
    )


def _script_attrs(
    context: template.Context | None, url: str, token: str | None = None
) -> list[tuple[str, str]]:
    attrs = [("data-progrock-url", url)]
    if token is not None:
        attrs.append(("data-progrock-token", token))
    api = api_prefix()
    if api is not None:
        attrs.append(("data-progrock-api", api))
        request = context.get("request") if context is not None else None
        if request is not None:
            # For starts and cancels over HTTP; also sets the CSRF cookie.
            attrs.append(("data-progrock-csrf", get_token(request)))
    return attrs


def _script(src: str, attrs: list[tuple[str, str]]) -> SafeString:
    return format_html(
        '<script type="module" src="{}"{}></script>',
        static(src),
        format_html_join("", ' {}="{}"', attrs),
    )


@register.simple_tag(takes_context=True)
def progrock_script(
    context: template.Context, url: str = DEFAULT_URL, token: str | None = None
) -> SafeString:
    """Render ``<script type="module" src=".../progrock.js" data-progrock-url="...">``."""
    attrs = _script_attrs(
        context, _check_url("progrock_script", url), _check_token("progrock_script", token)
    )
    return _script(SCRIPT_PATH, attrs)


def _assets(context: template.Context, url: str, token: str | None = None) -> SafeString:
    """The bar's stylesheet and module, the first time a page asks for them."""
    request = context.get("request")
    holder: Any = request if request is not None else context
    if getattr(holder, _ASSETS_DONE, False):
        return SafeString("")
    setattr(holder, _ASSETS_DONE, True)
    # Repeating them would do no harm (a module runs once per page), only noise.
    return format_html(
        '<link rel="stylesheet" href="{}">{}',
        static(BAR_STYLE_PATH),
        _script(BAR_SCRIPT_PATH, _script_attrs(context, url, token)),
    )


@register.simple_tag(takes_context=True)
def progrock_bar_assets(
    context: template.Context, url: str = DEFAULT_URL, token: str | None = None
) -> SafeString:
    """The bars' stylesheet and script, e.g. in ``<head>``; later bars then skip them."""
    url = _check_url("progrock_bar_assets", url)
    return _assets(context, url, _check_token("progrock_bar_assets", token))


def _start_request(kind: object, params: object) -> Start:
    """The start the button sends, checked as the server will check it."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError as exc:
            raise template.TemplateSyntaxError(
                f"progrock_bar params must be a JSON object, got {params!r}: {exc}"
            ) from None
    try:
        request = parse_client_message(
            {"action": "start", "kind": kind, "params": params}, protocol_limits()
        )
    except ProtocolError as exc:
        raise template.TemplateSyntaxError(f"progrock_bar: {exc.detail}") from None
    if not isinstance(request, Start):  # pragma: no cover - the action is "start"
        raise template.TemplateSyntaxError("progrock_bar: not a start request")
    return request


@register.simple_tag(takes_context=True)
def progrock_bar(
    context: template.Context,
    task_id: object = None,
    *,
    kind: object = None,
    params: object = None,
    label: object = None,
    cancel: object = True,
    url: str = DEFAULT_URL,
) -> SafeString:
    """A live, accessible progress bar for ``task_id``, or a button that starts ``kind``.

    A task id that is not a UUID renders an inert bar with the error (ids come
    from data); a bad ``kind``, ``params`` or option is a template error (they
    come from the template).
    """
    _check_url("progrock_bar", url)
    if not isinstance(cancel, bool):
        raise template.TemplateSyntaxError(
            f"progrock_bar cancel must be True or False, got {cancel!r}"
        )
    if label is not None and not isinstance(label, str):
        raise template.TemplateSyntaxError(
            f"progrock_bar label must be a string, got {type(label).__name__} {label!r}"
        )
    if kind is not None or params is not None:
        if task_id is not None:
            raise template.TemplateSyntaxError(
                f"progrock_bar takes a task id or kind=/params=, not both; got {task_id!r} "
                f"and kind={kind!r}"
            )
        start = _start_request(kind, params)
        shown: bar.Bar = bar.start_bar(
            start.kind, dict(start.params), label=label or f"Start {start.kind}", cancel=cancel
        )
    else:
        label = label or bar.DEFAULT_LABEL
        canonical = canonical_task_id(task_id) if isinstance(task_id, str) else None
        if canonical is None:
            shown = bar.inert_bar(f"task id must be a UUID, got {_quote(task_id)}", label=label)
        else:
            shown = bar.task_bar(canonical, label=label, cancel=cancel)
    return SafeString(_assets(context, url) + bar.render_bar(shown))


def _quote(value: object) -> str:
    text = repr(value) if isinstance(value, str) else f"{type(value).__name__} {value!r}"
    return text if len(text) <= 80 else text[:77] + "..."
