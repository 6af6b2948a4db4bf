"""``progrock run`` and ``progrock watch``: the terminal client's subcommands.

Exit codes: 0 the task succeeded, 1 it failed, 2 it was cancelled (and, as
usual with argparse, a usage error), 3 a connection or protocol problem,
130 interrupted (the task keeps running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO

from progrock.client.args import (
    DEFAULT_URL,
    ArgumentValueError,
    parse_attempts,
    parse_kind,
    parse_param,
    parse_task_id,
    parse_url,
)
from progrock.client.connection import Client, ConnectionProblem
from progrock.client.display import Display
from progrock.client.runner import DEFAULT_ATTEMPTS, Driver, Options
from progrock.client.state import Outcome, Tracker, exit_code


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Adapt a parser from :mod:`progrock.client.args` to argparse's ``type=``."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ArgumentValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


class _ParamAction(argparse.Action):
    """Collects ``--param key=value`` options into one dict; a repeated key is an error."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Any,
        option_string: str | None = None,
    ) -> None:
        text = str(values)
        try:
            key, value = parse_param(text)
        except ArgumentValueError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        params = dict(getattr(namespace, self.dest, None) or {})
        if key in params:
            raise argparse.ArgumentError(
                self, f"expected each key once, got {key!r} again in {text!r}"
            )
        params[key] = value
        setattr(namespace, self.dest, params)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        type=_typed(parse_url),
        default=os.environ.get("PROGROCK_URL") or DEFAULT_URL,
        help=f"the ProgRock server (default: $PROGROCK_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--json",
        dest="json_mode",
        action="store_true",
        help="print every protocol message received as one JSON object per line",
    )
    parser.add_argument(
        "--reconnect-attempts",
        type=_typed(parse_attempts),
        default=os.environ.get("PROGROCK_RECONNECT_ATTEMPTS") or str(DEFAULT_ATTEMPTS),
        metavar="N",
        help="reconnect attempts after an unexpected disconnect "
        f"(default: $PROGROCK_RECONNECT_ATTEMPTS, else {DEFAULT_ATTEMPTS})",
    )
    parser.add_argument(
        "--session",
        default=os.environ.get("PROGROCK_SESSION") or None,
        metavar="KEY",
        help="the Django session key that owns the task (default: $PROGROCK_SESSION)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("PROGROCK_TOKEN") or None,
        metavar="TOKEN",
        help="authenticate with this token instead of a session: the task belongs to its "
        "user (default: $PROGROCK_TOKEN; prefer it to the option, which `ps` shows)",
    )


def add_client_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and ``watch`` to the ``progrock`` command, each with its ``func``."""
    run = subparsers.add_parser(
        "run",
        help="start a task and watch its progress",
        description="Start a task of KIND on a ProgRock server and show its progress.",
        epilog="Exit codes: 0 complete, 1 failed, 2 cancelled, 3 connection or protocol "
        "problem, 130 interrupted.",
    )
    run.add_argument("kind", metavar="KIND", type=_typed(parse_kind), help="the task kind")
    run.add_argument(
        "--param",
        dest="params",
        action=_ParamAction,
        default=None,
        metavar="KEY=VALUE",
        help="a task parameter; VALUE is parsed as JSON when it parses, else kept as a string "
        "(repeatable)",
    )
    _add_common(run)
    run.set_defaults(func=run_command)

    watch = subparsers.add_parser(
        "watch",
        help="watch an existing task",
        description="Follow the progress of a task started elsewhere.",
        epilog="Exit codes: 0 complete, 1 failed, 2 cancelled, 3 connection or protocol "
        "problem, 130 interrupted.",
    )
    watch.add_argument(
        "task_id", metavar="TASK_ID", type=_typed(parse_task_id), help="the task's UUID"
    )
    _add_common(watch)
    watch.set_defaults(func=watch_command)


def _display(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> Display:
    return Display(
        stdout,
        stderr,
        json_mode=args.json_mode,
        tty=stdout.isatty(),
        width=lambda: shutil.get_terminal_size().columns,
    )


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


async def _with_sigint(driver: Driver, body: Awaitable[Outcome]) -> Outcome:
    loop = asyncio.get_running_loop()
    installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, driver.interrupt)
        installed = True
    try:
        return await body
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


def _options(args: argparse.Namespace) -> Options:
    return Options(
        url=args.url,
        interactive=_stdin_is_tty(),
        reconnect_attempts=args.reconnect_attempts,
    )


async def _run(args: argparse.Namespace, display: Display) -> Outcome:
    ref = f"cli-{uuid.uuid4().hex[:12]}"
    async with Client(args.url, args.session, token=args.token) as client:
        if client.session_key is None and client.token is None:
            try:
                key = await client.obtain_session()
            except ConnectionProblem as exc:
                display.note(f"progrock: {exc}")
                return Outcome.PROBLEM
            if key is None:
                display.note(
                    "progrock: warning: the server set no session cookie; "
                    "only this connection can see the task"
                )
        options = _options(args)
        driver = Driver(client, Tracker(ref=ref), display, options)
        start = {"action": "start", "kind": args.kind, "params": args.params or {}, "ref": ref}
        return await _with_sigint(driver, driver.run(start))


async def _watch(args: argparse.Namespace, display: Display) -> Outcome:
    async with Client(args.url, args.session, token=args.token) as client:
        options = _options(args)
        driver = Driver(client, Tracker(task_id=args.task_id), display, options)
        outcome = await _with_sigint(
            driver, driver.run({"action": "subscribe", "task_id": args.task_id})
        )
    if outcome is Outcome.PROBLEM and args.session is None and args.token is None:
        display.note(
            "progrock: hint: a task belongs to the session that started it; pass "
            "--session KEY (or set $PROGROCK_SESSION) as printed by `progrock run`"
        )
    return outcome


def _execute(
    body: Callable[[argparse.Namespace, Display], Coroutine[Any, Any, Outcome]],
    args: argparse.Namespace,
) -> int:
    display = _display(args, sys.stdout, sys.stderr)
    try:
        outcome = asyncio.run(body(args, display))
    except KeyboardInterrupt:  # no SIGINT handler on this platform
        display.close()
        display.note("progrock: interrupted")
        outcome = Outcome.INTERRUPTED
    return exit_code(outcome)


def run_command(args: argparse.Namespace) -> int:
    """``progrock run KIND [--param key=value ...]``: start a task and follow it."""
    return _execute(_run, args)


def watch_command(args: argparse.Namespace) -> int:
    """``progrock watch TASK_ID``: follow an existing task."""
    return _execute(_watch, args)


__all__ = ["add_client_parsers", "run_command", "watch_command"]
