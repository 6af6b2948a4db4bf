"""The ``{% progrock_script %}`` template tag."""

from __future__ import annotations

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.templatetags.static import static


def render(source: str, **context: object) -> str:
    return Template("{% load progrock %}" + source).render(Context(context))


def test_script_tag_loads_module_from_static() -> None:
    """The tag renders a module script whose src is the static URL of progrock.js."""
    html = render("{% progrock_script %}")
    assert html == (
        f'<script type="module" src="{static("progrock/progrock.js")}" '
        'data-progrock-url="/prog/"></script>'
    )


def test_script_tag_passes_custom_url() -> None:
    """A ``url`` argument reaches the client through ``data-progrock-url``."""
    html = render('{% progrock_script url="/ws/progress/" %}')
    assert 'data-progrock-url="/ws/progress/"' in html


def test_script_tag_escapes_url() -> None:
    """A URL from the context is HTML-escaped, so it cannot break out of the attribute."""
    html = render("{% progrock_script url=bad %}", bad='/x"><b>')
    assert "<b>" not in html
    assert "&quot;&gt;&lt;b&gt;" in html


def test_script_tag_rejects_empty_url() -> None:
    """An empty URL is an error that quotes the bad value."""
    with pytest.raises(TemplateSyntaxError, match="got ''"):
        render('{% progrock_script url="" %}')


def test_static_file_exists() -> None:
    """The script the tag points at is found by the staticfiles finders."""
    from django.contrib.staticfiles import finders

    assert finders.find("progrock/progrock.js") is not None
