"""The reference backend task service: its own process with a small HTTP API.

ProgRock's workers start tasks here and poll their progress. Run it with
``python -m progrock.local.backend --port 8001`` (or ``progrock-backend``); the API is
specified in ``docs/backend.md``.

Modules: :mod:`.kinds` (task kinds, their parameters and the pure rock/hash
logic), :mod:`.store` (the in-memory task table and the hashing thread pool),
:mod:`.app` (the aiohttp application and fault injection), :mod:`.__main__`
(the command line) and :mod:`.testing` (start a real backend process from tests
and benchmarks).
"""

from __future__ import annotations
