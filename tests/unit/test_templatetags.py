"""The ``{% progrock_script %}``, ``{% progrock_bar %}`` and ``{% progrock_bar_assets %}`` tags."""

from __future__ import annotations

import re

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.templatetags.static import static
from django.test import RequestFactory

TASK = "7d0e8a52-3c1b-4f6e-9a1d-2b5c6d7e8f90"


def render(source: str, **context: object) -> str:
    return Template("{% load progrock %}" + source).render(Context(context))


def test_script_tag_loads_module_from_static() -> None:
    """The tag renders a module script with the socket URL and the HTTP API prefix."""
    html = render("{% progrock_script %}")
    assert html == (
        f'<script type="module" src="{static("progrock/progrock.js")}" '
        'data-progrock-url="/prog/" data-progrock-api="/prog/api/"></script>'
    )


def test_script_tag_passes_custom_url() -> None:
    """A ``url`` argument reaches the client through ``data-progrock-url``."""
    html = render('{% progrock_script url="/ws/progress/" %}')
    assert 'data-progrock-url="/ws/progress/"' in html


def test_script_tag_passes_csrf_token_with_a_request() -> None:
    """With the request in the context, the fallback's CSRF token travels in data-progrock-csrf."""
    html = render("{% progrock_script %}", request=RequestFactory().get("/"))
    assert re.search(r'data-progrock-csrf="[A-Za-z0-9]{32,}"', html)


def test_script_tag_escapes_url() -> None:
    """A URL from the context is HTML-escaped, so it cannot break out of the attribute."""
    html = render("{% progrock_script url=bad %}", bad='/x"><b>')
    assert "<b>" not in html
    assert "&quot;&gt;&lt;b&gt;" in html


def test_script_tag_rejects_empty_url() -> None:
    """An empty URL is an error that quotes the bad value."""
    with pytest.raises(TemplateSyntaxError, match="got ''"):
        render('{% progrock_script url="" %}')


def test_script_and_assets_tags_pass_a_token() -> None:
    """``token=`` reaches the client as data-progrock-token (escaped); none, no attribute."""
    html = render("{% progrock_script token=t %}", t='5.1tT2xk.a"b')
    assert 'data-progrock-token="5.1tT2xk.a&quot;b"' in html
    assert "data-progrock-token" not in render("{% progrock_script %}")
    assets = render("{% progrock_bar_assets token=t %}", t="tok")
    assert 'data-progrock-token="tok"' in assets


def test_a_token_that_is_no_string_is_an_error() -> None:
    """An empty or non-string token is a template error naming its type, not its value."""
    with pytest.raises(TemplateSyntaxError, match="token must be a non-empty string or None"):
        render("{% progrock_script token=t %}", t="")
    with pytest.raises(TemplateSyntaxError, match="got int"):
        render("{% progrock_bar_assets token=t %}", t=5)


@pytest.mark.parametrize(
    "path",
    ["progrock/progrock.js", "progrock/progrock-bar.js", "progrock/progrock-bar.css"],
)
def test_static_files_exist(path: str) -> None:
    """The files the tags point at are found by the staticfiles finders."""
    from django.contrib.staticfiles import finders

    assert finders.find(path) is not None


def test_bar_for_a_task_is_live_and_accessible() -> None:
    """A UUID gives a live bar: its canonical id, a <progress>, a status live region,
    a cancel button and a hidden result slot."""
    html = render("{% progrock_bar task_id %}", task_id=TASK.upper())
    assert f'data-task-id="{TASK}"' in html
    assert "data-progrock-bar" in html and 'data-status="loading"' in html
    assert re.search(r'<progress [^>]*max="100"[^>]*aria-label="Progress"', html)
    assert 'role="status"' in html
    assert re.search(r"<button [^>]*data-progrock-cancel>Cancel</button>", html)
    assert "<output " in html and "data-progrock-outcome hidden" in html


def test_bar_includes_its_assets_once_per_request() -> None:
    """Three bars in one request: one stylesheet and one module script, before the first bar."""
    html = render(
        "{% progrock_bar a %}{% progrock_bar a %}{% progrock_bar a %}",
        a=TASK,
        request=RequestFactory().get("/"),
    )
    assert html.count("progrock-bar.css") == 1
    assert html.count('src="/static/progrock/progrock-bar.js"') == 1
    assert html.count("data-progrock-bar ") == 3
    assert html.index("progrock-bar.js") < html.index("data-progrock-bar ")


def test_bar_assets_tag_marks_them_included() -> None:
    """After {% progrock_bar_assets %} (e.g. in <head>) the bars do not repeat them."""
    html = render(
        "{% progrock_bar_assets %}<body>{% progrock_bar a %}",
        a=TASK,
        request=RequestFactory().get("/"),
    )
    assert html.count("progrock-bar.js") == 1
    assert html.index("progrock-bar.js") < html.index("<body>")


@pytest.mark.parametrize(
    ("task_id", "quoted"),
    [("nope", "'nope'"), ("", "''"), (None, "NoneType None"), (42, "int 42")],
)
def test_bar_for_a_bad_id_is_inert_and_says_why(task_id: object, quoted: str) -> None:
    """An id that is not a UUID renders an inert bar quoting it, not a template error."""
    html = render("{% progrock_bar task_id %}", task_id=task_id)
    assert 'data-status="invalid"' in html
    assert "data-task-id" not in html and "data-kind" not in html
    assert "data-progrock-cancel" not in html
    escaped = quoted.replace("'", "&#x27;")
    assert f"task id must be a UUID, got {escaped}</output>" in html


def test_bar_escapes_label_and_bad_id() -> None:
    """Labels and quoted ids are HTML-escaped."""
    html = render("{% progrock_bar bad label=label %}", bad="<i>", label="<b>x</b>")
    assert "<b>" not in html and "<i>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "&lt;i&gt;" in html


def test_start_bar_carries_kind_and_params() -> None:
    """kind= and params= give a start button (disabled until the script wires it)."""
    html = render(
        '{% progrock_bar kind="rock" params=params label="Rock out" %}',
        params={"step": 5, "note": '"quoted"'},
    )
    assert 'data-kind="rock"' in html
    assert (
        'data-params="{&quot;step&quot;:5,&quot;note&quot;:&quot;\\&quot;quoted\\&quot;&quot;}"'
        in html
    )
    assert re.search(r'<button class="progrock-bar__button" type="submit" disabled>Rock out<', html)
    assert 'data-status="idle"' in html and "data-task-id" not in html


def test_start_bar_accepts_json_params_and_defaults() -> None:
    """params may be a JSON object string; the label defaults to "Start <kind>"."""
    html = render("""{% progrock_bar kind="hash" params='{"mb": 4}' %}""")
    assert 'data-params="{&quot;mb&quot;:4}"' in html
    assert ">Start hash</button>" in html


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{% progrock_bar kind="nope" %}', "nope"),
        ('{% progrock_bar kind="rock" params="[1]" %}', "params must be"),
        (
            '{% progrock_bar kind="rock" params="{bad" %}',
            "params must be a JSON object, got '{bad'",
        ),
        ('{% progrock_bar "x" kind="rock" %}', "not both"),
        ('{% progrock_bar "x" cancel="no" %}', "cancel must be True or False, got 'no'"),
        ('{% progrock_bar "x" label=3 %}', "label must be a string, got int 3"),
        ('{% progrock_bar "x" url="" %}', "url must be a non-empty string, got ''"),
    ],
)
def test_bar_rejects_bad_options(source: str, message: str) -> None:
    """Options written in the template are checked, with an error quoting the bad value."""
    with pytest.raises(TemplateSyntaxError, match=re.escape(message)):
        render(source)


def test_bar_without_cancel_has_no_cancel_button() -> None:
    """cancel=False leaves the cancel button out."""
    assert "data-progrock-cancel" not in render("{% progrock_bar t cancel=False %}", t=TASK)
