"""ProgRock's terminal client: ``progrock run`` and ``progrock watch``.

* :mod:`~progrock.client.args` — pure parsing of command-line values;
* :mod:`~progrock.client.state` — pure state machine of a watched task, exit codes, backoff;
* :mod:`~progrock.client.render` — pure rendering of the progress and final lines;
* :mod:`~progrock.client.connection` — the aiohttp WebSocket connection;
* :mod:`~progrock.client.display` — where output goes (bar, lines or JSON);
* :mod:`~progrock.client.runner` — the async loop: reconnects and Ctrl-C;
* :mod:`~progrock.client.cli` — the argparse subcommands.
"""

from __future__ import annotations
