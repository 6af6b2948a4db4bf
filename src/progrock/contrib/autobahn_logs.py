"""Plain arguments for Autobahn's per-frame debug log lines (Daphne's sockets); opt-in.

Autobahn, under Daphne, logs a debug line for every WebSocket frame it sends
or receives, and builds that line's arguments whether debug logging is on or
not: ``hltype(method)`` (the method's qualified name) and ``hlval(value)``,
each styled with ANSI colours by ``click`` when ``click`` is installed (uvicorn
brings it in). That cost 4-5 microseconds per progress update sent, a tenth
of a web process's CPU per update (``benchmarks/cpu_breakdown.py 1500
--step 1``: web 43-44 -> 39 us per update).

Upstream: no upstream issue found (searched crossbario/autobahn-python's
issues for the per-frame debug arguments, ``hltype``/``hlval`` and logging
cost). What would make this module unnecessary: Autobahn checking that debug
logging is enabled before building the arguments of its per-frame debug
lines (``WebSocketProtocol.sendData`` and the frame handlers in
``autobahn.websocket.protocol``), or making ``hltype``/``hlval`` return a
lazily formatted value.

:func:`install` makes those two helpers, as the WebSocket modules of Autobahn
see them, return their argument unchanged. The log lines are not dropped:
with debug logging on, they show the value (and the bound method's repr)
without colours. Nothing else in Autobahn changes. Opt-in, like
:func:`progrock.contrib.twisted_writes.install`: call it in your ``asgi.py`` when
Daphne serves it (the example project does). It is guarded
(:mod:`progrock.contrib._guard`): it installs only on the Autobahn versions it
was tested with (:data:`GUARD`) and only when every module it changes has
both helpers; otherwise it warns once and changes nothing.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from progrock.contrib._guard import Guard, missing_members

logger = logging.getLogger("progrock.contrib")

#: Tested with Autobahn 26.10.2 (constraints.txt). Autobahn is
#: calendar-versioned (year.month.patch) and its WebSocket modules' imports
#: are not an API, so the range stops at the next year's releases.
GUARD = Guard("progrock.contrib.autobahn_logs", "Autobahn", first="26.10.2", before="27")

#: The modules whose per-frame debug lines call ``hltype`` and ``hlval``.
MODULES = ("autobahn.websocket.protocol", "autobahn.twisted.websocket")
#: The helpers replaced in each of them.
HELPERS = ("hltype", "hlval")


def plain(value: Any, *_style: Any, **_options: Any) -> Any:
    """What ``hltype``/``hlval`` return once installed: the value itself."""
    return value


def install() -> bool:
    """Make Autobahn's WebSocket modules build their debug arguments for free.

    Returns True if installed (now or before). False if Autobahn is missing,
    or, with one warning, if this Autobahn is not one it was tested with or
    one of :data:`MODULES` cannot be imported or lacks a helper: then nothing
    is changed.
    """
    try:
        import autobahn
    except ImportError:
        return False
    modules: list[ModuleType] = []
    gone: list[str] = []
    for name in MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            gone.append(name)
    for module in modules:
        gone += missing_members(module, HELPERS, module.__name__)
    if not GUARD.allows(getattr(autobahn, "__version__", None), gone):
        return False
    for module in modules:
        for helper in HELPERS:
            setattr(module, helper, plain)
    logger.debug("Autobahn's per-frame debug arguments are plain values")
    return True
