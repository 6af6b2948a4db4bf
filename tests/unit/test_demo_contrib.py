"""The example project runs progrock.contrib unless PROGROCK_DEMO_CONTRIB=0 (to measure both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What the demo's asgi.py leaves installed, and which layer its settings choose.
PROBE = """
import json
import progrock_demo.asgi
from autobahn.websocket import protocol
from django.conf import settings
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import tcp
from progrock.contrib import autobahn_close, autobahn_logs, daphne_close_codes
print(json.dumps({
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "twisted_writes": bool(getattr(tcp.Server, "_progrock_write_through", False)),
    "autobahn_logs": protocol.hlval is autobahn_logs.plain,
    "autobahn_close": bool(getattr(WebSocketFactory, autobahn_close._MARK, False)),
    "daphne_close_codes": bool(getattr(WebSocketProtocol, daphne_close_codes._MARK, False)),
}))
"""


def demo(contrib: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROGROCK_DEMO_CONTRIB"}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "example"), str(ROOT / "src")]),
        DJANGO_SETTINGS_MODULE="progrock_demo.settings",
        PROGROCK_DATA_DIR=str(tmp_path),
    )
    if contrib is not None:
        env["PROGROCK_DEMO_CONTRIB"] = contrib
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("contrib", "on"), [(None, True), ("1", True), ("0", False)], ids=["default", "1", "0"]
)
def test_the_demo_runs_contrib_unless_told_not_to(
    contrib: str | None, on: bool, tmp_path: Path
) -> None:
    """By default (and with 1) the demo uses the three performance parts; with 0 none of them
    (the close codes, part of the protocol, stay on: autobahn_close, daphne_close_codes)."""
    done = demo(contrib, tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    layer = "progrock.contrib.layer" if on else "channels_redis.core"
    assert got == {
        "layer": f"{layer}.RedisChannelLayer",
        "twisted_writes": on,
        "autobahn_logs": on,
        "autobahn_close": True,
        "daphne_close_codes": True,
    }


def test_a_wrong_value_is_refused_quoting_it(tmp_path: Path) -> None:
    """PROGROCK_DEMO_CONTRIB=yes stops the project with an error naming the variable."""
    done = demo("yes", tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured: PROGROCK_DEMO_CONTRIB must be '0' or '1', got 'yes'" in (
        done.stderr
    )
