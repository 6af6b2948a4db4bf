"""The ``progrock`` console script: ``up``, ``run``, ``watch``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from progrock.client.cli import add_client_parsers
    from progrock.local.stack import add_up_parser

    parser = argparse.ArgumentParser(
        prog="progrock", description="Real-time progress for long-running Django tasks."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_up_parser(sub)
    add_client_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
