"""The async loop behind ``progrock run`` and ``progrock watch``.

It joins the pieces: a :class:`~progrock.client.connection.Client` for I/O, a
:class:`~progrock.client.state.Tracker` for meaning, a
:class:`~progrock.client.display.Display` for output. It also owns the two
things that need time: reconnecting with backoff after an unexpected
disconnect, and Ctrl-C (ask, cancel on the server, or just leave).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from progrock.client.args import watch_command
from progrock.client.connection import (
    SERVICE_RESTART,
    Client,
    Connection,
    ConnectionProblem,
    Disconnected,
)
from progrock.client.display import Display
from progrock.client.state import Outcome, Tracker, backoff_delays

DEFAULT_ATTEMPTS = 5


@dataclass
class Options:
    """How a :class:`Driver` behaves; the defaults suit an interactive terminal."""

    url: str
    interactive: bool = False  # stdin is a TTY: ask before cancelling on Ctrl-C
    reconnect_attempts: int = DEFAULT_ATTEMPTS
    backoff_base: float = 0.5
    backoff_cap: float = 5.0
    terminal_grace: float = 10.0  # wait for a terminal message after a terminal snapshot


class _Interrupted(Exception):
    pass


class Driver:
    """Sends the first request, then follows the task until it ends."""

    def __init__(
        self,
        client: Client,
        tracker: Tracker,
        display: Display,
        options: Options,
        *,
        clock: Callable[[], float] = time.monotonic,
        stdin_fd: int = 0,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.display = display
        self.options = options
        self._clock = clock
        self._stdin_fd = stdin_fd
        self._interrupt = asyncio.Event()
        self._answer: asyncio.Future[str] | None = None
        self._conn: Connection | None = None
        self._cancel_sent = False

    def interrupt(self) -> None:
        """Record a Ctrl-C (called by the SIGINT handler)."""
        self._interrupt.set()

    async def run(self, first: dict[str, Any]) -> Outcome:
        try:
            self._conn = await self.client.connect()
            await self._conn.send(first)
        except (ConnectionProblem, Disconnected) as exc:
            return self._problem(str(exc))
        try:
            return await self._loop()
        finally:
            self._stop_reading()
            if self._conn is not None:
                await self._conn.close()
            self.display.close()

    # -- the loop ---------------------------------------------------------

    async def _loop(self) -> Outcome:
        recv: asyncio.Future[Any] | None = None
        try:
            while True:
                if self._interrupt.is_set():
                    self._interrupt.clear()
                    outcome = await self._on_interrupt()
                    if outcome is not None:
                        return outcome
                if recv is None:
                    conn = self._conn
                    if conn is None:  # pragma: no cover - run() sets it
                        return self._problem("not connected")
                    recv = asyncio.ensure_future(conn.receive())
                waiter = asyncio.ensure_future(self._interrupt.wait())
                waits: set[asyncio.Future[Any]] = {recv, waiter}
                if self._answer is not None:
                    waits.add(self._answer)
                grace = self.options.terminal_grace if self.tracker.awaiting_terminal else None
                done, _ = await asyncio.wait(
                    waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if not done:
                    outcome = self.tracker.finish_from_snapshot()
                    if outcome is not None:
                        self.display.final(self.tracker.view, outcome)
                        return outcome
                if self._answer is not None and self._answer in done:
                    outcome = await self._on_answer(self._answer.result())
                    if outcome is not None:
                        return outcome
                if recv in done:
                    finished, recv = recv, None
                    outcome = await self._on_receive(finished)
                    if outcome is not None:
                        return outcome
        finally:
            if recv is not None:
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)

    async def _on_receive(self, finished: asyncio.Future[Any]) -> Outcome | None:
        try:
            msg = finished.result()
        except ConnectionProblem as exc:
            return self._problem(str(exc))
        except Disconnected as exc:
            try:
                return await self._reconnect(str(exc), restarting=exc.code == SERVICE_RESTART)
            except _Interrupted:
                return self._leave()
        return await self._on_message(msg)

    async def _on_message(self, msg: Any) -> Outcome | None:
        self.display.message(msg)
        now = self._clock()
        step = self.tracker.handle(msg, now)
        if step.problem is not None:
            return self._problem(f"error: {step.problem}")
        if step.note is not None:
            self.display.note(f"progrock: {step.note}")
        if step.started and step.outcome is None:
            self._announce()
            if self.tracker.cancel_requested:
                await self._send_cancel()
        elif step.started:
            self.display.note(f"progrock: task {self.tracker.task_id} ended before it started")
        if step.outcome is not None:
            self.display.final(self.tracker.view, step.outcome)
            return step.outcome
        if step.changed:
            self.display.update(self.tracker.view, self.tracker.estimated_rate(now), now)
        return None

    # -- messages to the user -------------------------------------------------

    def _watch_line(self) -> str:
        task_id = self.tracker.task_id or "?"
        return watch_command(
            task_id, self.options.url, self.client.session_key, token=bool(self.client.token)
        )

    def _announce(self) -> None:
        view = self.tracker.view
        self.display.note(f"progrock: task {view.task_id} started (kind {view.kind})")
        self.display.note(f"progrock: watch it elsewhere with: {self._watch_line()}")

    def _problem(self, text: str) -> Outcome:
        self.display.close()
        self.display.note(f"progrock: {text}")
        return Outcome.PROBLEM

    def _leave(self) -> Outcome:
        self.display.close()
        if self.tracker.task_id is None:
            self.display.note("progrock: interrupted")
        else:
            self.display.note(
                f"progrock: disconnected; task {self.tracker.task_id} keeps running. "
                f"Watch it again with: {self._watch_line()}"
            )
        return Outcome.INTERRUPTED

    # -- Ctrl-C -----------------------------------------------------------

    async def _on_interrupt(self) -> Outcome | None:
        if self._answer is not None or self._cancel_sent or self.tracker.cancel_requested:
            return self._leave()  # a second Ctrl-C: stop waiting
        if not self.options.interactive:
            self.tracker.cancel_requested = True
            if self.tracker.task_id is None:
                self.display.note("progrock: interrupted: cancelling the task once it starts")
                return None
            await self._send_cancel()
            return None
        if self.tracker.task_id is None:
            return self._leave()
        self._ask(f"\nCancel task {self.tracker.task_id} on the server? [y/N] ")
        return None

    def _ask(self, question: str) -> None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        fd = self._stdin_fd

        def readable() -> None:
            try:
                data = os.read(fd, 1024)
            except OSError:
                data = b""
            if not answer.done():
                answer.set_result(data.decode(errors="replace"))
            loop.remove_reader(fd)

        self.display.prompt(question)
        loop.add_reader(fd, readable)
        self._answer = answer

    def _stop_reading(self) -> None:
        if self._answer is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._stdin_fd)
            self._answer = None

    async def _on_answer(self, text: str) -> Outcome | None:
        self._stop_reading()
        if text.strip().lower() not in ("y", "yes"):
            return self._leave()
        self.display.release()
        self.tracker.cancel_requested = True
        await self._send_cancel()
        return None

    async def _send_cancel(self) -> None:
        task_id = self.tracker.task_id
        if task_id is None or self._conn is None:
            return
        self.display.note(f"progrock: cancelling task {task_id}...")
        self._cancel_sent = True
        # If the socket is gone, the receive side notices and reconnects, and
        # the cancel is sent again then.
        with contextlib.suppress(Disconnected):
            await self._conn.send({"action": "cancel", "task_id": task_id})

    # -- reconnecting -------------------------------------------------------

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds; a Ctrl-C ends the pause early."""
        try:
            await asyncio.wait_for(self._interrupt.wait(), timeout=delay)
        except TimeoutError:
            return
        self._interrupt.clear()
        if self.options.interactive or self.tracker.cancel_requested:
            raise _Interrupted
        self.tracker.cancel_requested = True  # cancel as soon as we are back
        self.display.note("progrock: interrupted: cancelling the task once reconnected")

    async def _reconnect(self, reason: str, *, restarting: bool = False) -> Outcome | None:
        task_id = self.tracker.task_id
        if task_id is None:
            return self._problem(f"connection lost before the task started: {reason}")
        if self._conn is not None:
            await self._conn.close()
        attempts = self.options.reconnect_attempts
        delays = backoff_delays(
            attempts,
            base=self.options.backoff_base,
            cap=self.options.backoff_cap,
            restarting=restarting,
        )
        for number, delay in enumerate(delays, 1):
            self.display.note(
                f"progrock: connection lost ({reason}); "
                f"reconnecting in {delay:.1f} s (attempt {number}/{attempts})"
            )
            await self._pause(delay)
            try:
                conn = await self.client.connect()
            except ConnectionProblem as exc:
                reason = str(exc)
                continue
            try:
                await conn.send({"action": "subscribe", "task_id": task_id})
            except Disconnected as exc:
                await conn.close()
                reason = str(exc)
                continue
            self._conn = conn
            if self.tracker.cancel_requested:
                await self._send_cancel()
            return None
        return self._problem(f"gave up after {attempts} reconnect attempts: {reason}")
