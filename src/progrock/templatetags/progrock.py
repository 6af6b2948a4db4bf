"""``{% progrock_script %}``: the ``<script>`` tag that loads the browser client.

Like django-htmx, settings reach the JavaScript through ``data-*`` attributes:
``progrock.js`` reads ``data-progrock-url`` from the tag as the default socket
URL of ``new ProgRock()``.

    {% load progrock %}
    {% progrock_script %}                      {# socket at /prog/ #}
    {% progrock_script url="/custom/prog/" %}
"""

from __future__ import annotations

from django import template
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

DEFAULT_URL = "/prog/"
"""The WebSocket path the ProgRock consumer is routed at (docs/protocol.md, 1)."""

SCRIPT_PATH = "progrock/progrock.js"


@register.simple_tag
def progrock_script(url: str = DEFAULT_URL) -> SafeString:
    """Render ``<script type="module" src=".../progrock.js" data-progrock-url="...">``."""
    if not isinstance(url, str) or not url:
        raise template.TemplateSyntaxError(
            f"progrock_script url must be a non-empty string, got {url!r}"
        )
    return format_html(
        '<script type="module" src="{}" data-progrock-url="{}"></script>',
        static(SCRIPT_PATH),
        url,
    )
