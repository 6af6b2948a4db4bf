"""The ``progrock`` console script: ``up``, ``run``, ``watch``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from progrock.exceptions import MissingExtra


def build_parser() -> argparse.ArgumentParser:
    from progrock.client.cli import add_client_parsers

    parser = argparse.ArgumentParser(
        prog="progrock", description="Real-time progress for long-running Django tasks."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    try:
        # The local stack is an optional part (the `local` extra): without it,
        # `up` only says what to install, and `run`/`watch` still work.
        from progrock.local.stack import add_up_parser
    except MissingExtra as exc:
        _add_unavailable_up_parser(sub, str(exc))
    else:
        add_up_parser(sub)
    add_client_parsers(sub)
    return parser


def _add_unavailable_up_parser(subparsers: Any, reason: str) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up", help=f"run the whole stack (unavailable: {reason})", add_help=False
    )

    def unavailable(args: argparse.Namespace) -> int:
        print(f"progrock up: {reason}", file=sys.stderr)
        return 2

    # Whatever options follow `up` are left unparsed: the one line above is the answer.
    parser.set_defaults(func=unavailable, ignores_options=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "ignores_options", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
