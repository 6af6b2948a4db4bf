"""``python -m progrock.local.backend`` / ``progrock-backend``: run the backend task service.

Prints ``progrock-backend listening on http://HOST:PORT`` once it accepts
connections (``--port 0`` picks a free port and prints it) and exits cleanly on
SIGTERM or SIGINT. With ``--data FILE`` its tasks are kept in that SQLite file
and a backend started again on it continues them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.web_log import AccessLogger

from progrock.local.backend.app import Faults, make_app
from progrock.local.backend.store import TaskStore

READY_PREFIX = "progrock-backend listening on "


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="progrock-backend", description="ProgRock's reference backend task service."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port, 0 for any free (8001)")
    parser.add_argument(
        "--ttl",
        type=_non_negative_float,
        default=3600.0,
        help="seconds a finished task stays visible (3600)",
    )
    parser.add_argument(
        "--hash-workers", type=int, default=2, help="threads running hash tasks at once (2)"
    )
    parser.add_argument(
        "--max-tasks", type=int, default=100_000, help="most tasks held in memory (100000)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="FILE",
        help="SQLite file that keeps the tasks, so that a restarted backend continues them "
        "(default: none, tasks live in memory only)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    faults = parser.add_argument_group("fault injection (for tests; off by default)")
    faults.add_argument(
        "--allow-faults", action="store_true", help="enable the POST /_faults admin endpoint"
    )
    faults.add_argument("--fault-status", type=int, help="answer task routes with this status")
    faults.add_argument(
        "--fault-delay",
        type=_non_negative_float,
        default=0.0,
        help="delay task routes by this many seconds",
    )
    faults.add_argument(
        "--fault-garbage", action="store_true", help="answer task routes with non-JSON"
    )
    return parser


async def serve(args: argparse.Namespace, store: TaskStore) -> None:
    """Serve ``store`` until SIGTERM/SIGINT."""
    faults = Faults(status=args.fault_status, delay_s=args.fault_delay, garbage=args.fault_garbage)
    app = make_app(store, faults=faults, allow_faults=args.allow_faults)
    runner = web.AppRunner(app, access_log=AccessLogger if args.access_log else None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, args.host, args.port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"{READY_PREFIX}http://{shown}:{port}", flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hash_workers < 1:
        build_parser().error(f"--hash-workers must be >= 1, got {args.hash_workers}")
    if args.max_tasks < 1:
        build_parser().error(f"--max-tasks must be >= 1, got {args.max_tasks}")
    if args.fault_status is not None and not 400 <= args.fault_status <= 599:
        build_parser().error(f"--fault-status must be within 400..599, got {args.fault_status}")
    if args.data is not None and not args.data.parent.is_dir():
        build_parser().error(f"--data: the folder of {str(args.data)!r} does not exist")
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        store = TaskStore(
            ttl=args.ttl, hash_workers=args.hash_workers, max_tasks=args.max_tasks, path=args.data
        )
    except (ValueError, sqlite3.Error) as exc:  # an unreadable task file
        print(
            f"progrock-backend: cannot use the task file {str(args.data)!r}: {exc}", file=sys.stderr
        )
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
