"""The delay server behind the ``asgi.delay`` channel (Channels 1's contract).

See ``docs/delay.md``. Public API:

* :func:`send_delayed` / :func:`send_delayed_sync` / :func:`has_pending`;
* :class:`DelayStore` (``schedule_many`` for one-round-trip bulk scheduling);
* :class:`DelayServer` (what ``manage.py rundelay`` runs);
* :class:`Envelope` and :class:`InvalidEnvelope`.
"""

from __future__ import annotations

from progrock.delay.envelope import Envelope, InvalidEnvelope
from progrock.delay.server import DelayServer
from progrock.delay.store import (
    DelayStore,
    close_default_stores,
    has_pending,
    send_delayed,
    send_delayed_sync,
)

__all__ = [
    "DelayServer",
    "DelayStore",
    "Envelope",
    "InvalidEnvelope",
    "close_default_stores",
    "has_pending",
    "send_delayed",
    "send_delayed_sync",
]
