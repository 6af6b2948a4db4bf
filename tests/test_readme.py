"""The README as a package index shows it: absolute links to files that exist, one project URL.

No I/O beyond reading the tree.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "https://github.com/django-progrock/django-progrock"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def readme_links() -> list[str]:
    return LINK.findall((ROOT / "README.md").read_text())


def test_every_readme_link_is_absolute() -> None:
    """A relative link breaks on a package index page: every README link is an https URL."""
    links = readme_links()
    assert links, "the README links to nothing"
    relative = [link for link in links if not link.startswith("https://")]
    assert not relative, relative


def test_the_readme_links_into_this_project_name_files_that_exist() -> None:
    """Each link to the project's own files (blob/main/PATH) names a file of this tree."""
    prefix = f"{PROJECT}/blob/main/"
    paths = [
        link[len(prefix) :].split("#")[0] for link in readme_links() if link.startswith(prefix)
    ]
    assert "docs/tutorial.md" in paths, paths
    missing = [path for path in paths if not (ROOT / path).is_file()]
    assert not missing, missing


def test_the_readme_gives_the_install_line_and_the_two_commands() -> None:
    """The README says how to install the distribution and the two commands of a checkout."""
    text = (ROOT / "README.md").read_text()
    for line in ("pip install django-progrock", "make up", "make test"):
        assert line in text, line


def test_project_urls_use_the_one_project_url() -> None:
    """pyproject's Project-URLs all point into the same project URL as the README's links."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert {"Homepage", "Documentation", "Source", "Changelog", "Issues"} <= set(urls)
    others = {name: url for name, url in urls.items() if not url.startswith(PROJECT)}
    assert not others, others
    prefix = f"{PROJECT}/blob/main/"
    for url in urls.values():
        if url.startswith(prefix):
            assert (ROOT / url[len(prefix) :]).is_file(), url
