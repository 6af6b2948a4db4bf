"""Never silent: a web process refuses starts that no process would carry.

A start needs a live worker (``manage.py runprogrock``) to create it and a
live delay server (``manage.py rundelay``) to time its polls. Without them a
task would sit at 0 % for ever; instead the start is answered ``unavailable``,
naming the missing kind and the command that runs it, and the web process
logs one warning when the outage begins and one when it ends.

Whether they are live comes from their heartbeats (:mod:`progrock.heartbeat`):
one Redis round trip, cached for :data:`FRESH_FOR` seconds while all is well
(and :data:`RECHECK_AFTER` while something is missing, so a process that has
just come back is noticed at once), shared by every start of the process. A
kind counts as missing once it has been so for :data:`CONFIRM_AFTER` seconds:
right after Redis itself stalled, every beat looks old until the next one. A
start that finds a kind only suspected waits (re-reading) until it is back or
confirmed missing, so that even a fresh process's first start is refused.

The web process beats too, from the first socket it serves (:func:`ensure_heartbeat`):
an ASGI server gives an application no start-up hook, and an HTTP request may run
in an event loop of its own (under a WSGI server) that ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from progrock import heartbeat, logs
from progrock.conf import progrock_settings
from progrock.exceptions import ProtocolError
from progrock.state.live import get_redis
from progrock.web.fanout import get_hub

logger = logging.getLogger("progrock.web")

#: Seconds a finding that every needed kind is live is trusted.
FRESH_FOR: Final = 2.0
#: Seconds a finding that a kind is missing is trusted (a start meanwhile is refused).
RECHECK_AFTER: Final = 0.25
#: Seconds a kind must stay without a live process before starts are refused.
CONFIRM_AFTER: Final = 2 * heartbeat.INTERVAL
#: The kinds a start needs.
NEEDED: Final = ("worker", "delay")


class Liveness:
    """Which needed kinds have no live process, as last read (cached, one read at a time).

    A kind found without a live process is only *suspected* missing until it has
    been found so for ``confirm_after`` seconds: after Redis itself stalled (frozen,
    restarted), every beat looks old for a moment, and the processes beat again
    within an interval. Meanwhile starts are accepted and it is read again soon.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[frozenset[str]]],
        *,
        needed: tuple[str, ...] = NEEDED,
        fresh_for: float = FRESH_FOR,
        recheck_after: float = RECHECK_AFTER,
        confirm_after: float = CONFIRM_AFTER,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        log: logging.Logger = logger,
        meaning: tuple[str, str] = (
            "starts are refused with 'unavailable' until one runs",
            "starts are accepted",
        ),
    ) -> None:
        self.read = read
        self.sleep = sleep
        self.log = log
        #: What an outage means for the reader, said when it begins and when it ends.
        self.meaning = meaning
        self.needed = needed
        self.fresh_for = fresh_for
        self.recheck_after = recheck_after
        self.confirm_after = confirm_after
        self.clock = clock
        self._missing: tuple[str, ...] = ()
        self._suspected: dict[str, float] = {}  # kind -> when first found without a process
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        if self._read_at is None:
            return False
        trust = self.recheck_after if self._suspected else self.fresh_for
        return self.clock() - self._read_at < trust

    async def missing(self) -> tuple[str, ...]:
        """The needed kinds without a live process (raises what the read raises)."""
        if self._fresh():
            return self._missing
        async with self._lock:
            if not self._fresh():  # another start may have read it meanwhile
                live = await self.read()
                self._read_at = now = self.clock()
                for kind in self.needed:
                    if kind in live:
                        self._suspected.pop(kind, None)
                    else:
                        self._suspected.setdefault(kind, now)
                self._note(
                    [
                        kind
                        for kind in self.needed
                        if kind in self._suspected
                        and now - self._suspected[kind] >= self.confirm_after
                    ]
                )
        return self._missing

    async def settled(self) -> tuple[str, ...]:
        """:meth:`missing`, once no kind is only suspected: while one is, read again every
        ``recheck_after`` seconds until it is back or confirmed missing (at most
        ``confirm_after``). A fresh process's first start is thus refused when nothing
        carries it, instead of being accepted because nothing was confirmed yet."""
        missing = await self.missing()
        while any(kind not in missing for kind in self._suspected):
            await self.sleep(self.recheck_after)
            missing = await self.missing()
        return missing

    def _note(self, missing: list[str]) -> None:
        before, now = set(self._missing), set(missing)
        began, ended = self.meaning
        for kind in missing:
            if kind not in before:
                self.log.warning("%s; %s", heartbeat.missing_sentence(kind), began)
        for kind in self._missing:
            if kind not in now:
                self.log.warning("a %s is running again; %s", heartbeat.NAMES[kind], ended)
        self._missing = tuple(missing)


def unavailable_detail(missing: tuple[str, ...]) -> str:
    """The ``detail`` of a start refused because ``missing`` kinds have no live process."""
    return "; ".join(heartbeat.missing_sentence(kind) for kind in missing)


_liveness: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Liveness] = (
    weakref.WeakKeyDictionary()
)


def get_liveness() -> Liveness:
    """The running event loop's liveness cache (one per web process)."""
    loop = asyncio.get_running_loop()
    found = _liveness.get(loop)
    if found is None:
        prefix = progrock_settings.KEY_PREFIX

        async def read() -> frozenset[str]:
            return await heartbeat.live_kinds(get_redis(), prefix)

        found = _liveness[loop] = Liveness(read)
    return found


async def require_live(**context: object) -> None:
    """Raise ``unavailable`` (naming what is missing) unless a worker and a delay server live.

    ``context`` (``action``, ``ref``) goes into the error, as in every error frame.
    """
    missing = await get_liveness().settled()
    if missing:
        raise ProtocolError("unavailable", unavailable_detail(missing), **context)


async def _web_figures() -> Mapping[str, float | int]:
    return {"watched": get_hub().watched()}


def ensure_heartbeat() -> None:
    """Start this web process's heartbeat if it does not beat yet (cheap to call often)."""
    logs.set_process_kind("web")
    heartbeat.ensure_beating(get_redis(), progrock_settings.KEY_PREFIX, "web", figures=_web_figures)
