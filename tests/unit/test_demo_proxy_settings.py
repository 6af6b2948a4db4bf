"""The example project behind a proxy (deploy/): trusted origins and the HTTPS header
come from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
from django.conf import settings
print(json.dumps({
    "trusted": settings.CSRF_TRUSTED_ORIGINS,
    "proxy_ssl": getattr(settings, "SECURE_PROXY_SSL_HEADER", None),
}))
"""


def demo_settings(tmp_path: Path, **variables: str) -> dict[str, object]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_CSRF_TRUSTED_ORIGINS", "DJANGO_SECURE_PROXY_SSL_HEADER")
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "example"), str(ROOT / "src")]),
        DJANGO_SETTINGS_MODULE="progrock_demo.settings",
        PROGROCK_DATA_DIR=str(tmp_path),
        **variables,
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


def test_by_default_no_origin_is_trusted_and_no_proxy_header_believed(tmp_path: Path) -> None:
    """Without the variables: no trusted origins, no SECURE_PROXY_SSL_HEADER."""
    assert demo_settings(tmp_path) == {"trusted": [], "proxy_ssl": None}


def test_behind_a_proxy_the_environment_sets_both(tmp_path: Path) -> None:
    """DJANGO_CSRF_TRUSTED_ORIGINS (comma-separated) and DJANGO_SECURE_PROXY_SSL_HEADER=1."""
    found = demo_settings(
        tmp_path,
        DJANGO_CSRF_TRUSTED_ORIGINS="https://progrock.example.com, https://*.example.com",
        DJANGO_SECURE_PROXY_SSL_HEADER="1",
    )
    assert found == {
        "trusted": ["https://progrock.example.com", "https://*.example.com"],
        "proxy_ssl": ["HTTP_X_FORWARDED_PROTO", "https"],
    }
