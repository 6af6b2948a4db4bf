"""Plain arguments for Autobahn's per-frame debug log lines (Daphne's sockets); opt-in.

Autobahn, under Daphne, logs a debug line for every WebSocket frame it sends
or receives, and builds that line's arguments whether debug logging is on or
not: ``hltype(method)`` (the method's qualified name) and ``hlval(value)``,
each styled with ANSI colours by ``click`` when ``click`` is installed (uvicorn
brings it in). That cost 4-5 microseconds per progress update sent, a tenth
of a web process's CPU per update (``benchmarks/cpu_breakdown.py 1500
--step 1``: web 43-44 -> 39 us per update).

:func:`install` makes those two helpers, as the WebSocket modules of Autobahn
see them, return their argument unchanged. The log lines are not dropped:
with debug logging on, they show the value (and the bound method's repr)
without colours. Nothing else in Autobahn changes. Opt-in, like
:func:`progrock.contrib.twisted_writes.install`: call it in your ``asgi.py`` when
Daphne serves it (the example project does).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger("progrock")

#: The modules whose per-frame debug lines call ``hltype`` and ``hlval``.
MODULES = ("autobahn.websocket.protocol", "autobahn.twisted.websocket")


def plain(value: Any, *_style: Any, **_options: Any) -> Any:
    """What ``hltype``/``hlval`` return once installed: the value itself."""
    return value


def install() -> bool:
    """Make Autobahn's WebSocket modules build their debug arguments for free.

    Returns True if installed (now or before), False if Autobahn is missing.
    """
    patched = False
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for helper in ("hltype", "hlval"):
            if hasattr(module, helper):
                setattr(module, helper, plain)
                patched = True
    if patched:
        logger.debug("Autobahn's per-frame debug arguments are plain values")
    return patched
