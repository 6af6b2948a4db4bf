"""The WebSocket consumer at ``/prog/``: parse, authorise, forward, push.

It does no task work. ``start`` and ``cancel`` are forwarded to the worker
channel (``prog-rocker``), or, for a kind a task queue runs, the start goes to
that queue (:mod:`progrock.queues.routes`); task messages reach the socket through the
process's :class:`~progrock.web.fanout.Hub`, filtered by ``seq`` so a socket never
sees a message twice or out of order. A client that authenticates with a
token (its first message, or the handshake's subprotocol) owns tasks as its
user; :mod:`progrock.web.tokens` finds and checks the token.

On SIGTERM every socket closes with 1012 (service restart) so that its client
reconnects elsewhere at once (:mod:`progrock.web.restart`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper

from progrock import metrics, permissions
from progrock.conf import protocol_limits
from progrock.exceptions import InvalidToken, ProtocolError
from progrock.protocol import (
    ACCEPT_FRAME,
    FLAG_TERMINAL,
    Auth,
    Cancel,
    Limits,
    ListTasks,
    Start,
    Status,
    Subscribe,
    TaskView,
    Unsubscribe,
    dumps,
    error_message,
    parse_client_frame,
)
from progrock.queues import routes
from progrock.redact import redact
from progrock.state import reads
from progrock.tuning import START_ANSWER_WAIT
from progrock.web import forward, limits, liveness, restart, tokens
from progrock.web.failures import REQUEST_TIMEOUT, UNAVAILABLE, OutageLog, error_for
from progrock.web.fanout import get_hub

logger = logging.getLogger("progrock.consumers")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: Close code of a socket refused for its address's open sockets (RFC 6455: try again later).
CLOSE_TRY_AGAIN_LATER = 1013
# Seconds between two attempts of a socket's channel-layer receive while it fails.
RECEIVE_RETRY_MIN = 0.2
RECEIVE_RETRY_MAX = 5.0

_receive_outage = OutageLog(logger, "receiving from the channel layer")


async def receive_through_outages(receive: Receive) -> dict[str, Any]:
    """``receive()``, retried (with backoff and jitter) while Redis fails it.

    Channels ends a consumer, and Daphne closes its socket with 1011, when the
    channel-layer receive raises: every socket of a web process would close at
    once when Redis drops. Here the socket stays open; its requests meanwhile
    get ``unavailable``, and the fan-out resynchronises it once Redis is back.
    """
    delay = RECEIVE_RETRY_MIN
    while True:
        try:
            message = await receive()
        except UNAVAILABLE as exc:
            _receive_outage.failed(exc)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(RECEIVE_RETRY_MAX, delay * 2)
            continue
        _receive_outage.recovered()
        return message


def frame_send(send: Send) -> Send:
    """The ASGI ``send`` under Channels' session wrappers, for ``websocket.send`` frames.

    ``SessionMiddleware`` (in ``AuthMiddlewareStack``) wraps ``send`` to save
    the session on ``http.response.start``; for a WebSocket frame it does
    nothing but look at the session, which cost about 8 % of a busy web
    process. Task updates skip it; everything else goes through it.
    """
    while isinstance(owner := getattr(send, "__self__", None), InstanceSessionWrapper):
        send = owner.real_send
    return send


class ProgressConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """One browser socket."""

    owner: str
    limits: Limits
    watching: dict[str, int]  # task id -> last seq sent
    pending: dict[str, list[tuple[int, str, str]]]  # messages held while a snapshot loads
    refs: dict[str, str | int]
    send_frame: Send  # the unwrapped send for task updates (see frame_send)
    address: str | None = None  # the client's address, once counted in limits.sockets
    counted: bool = False
    may_auth: bool = False  # the next frame may be an auth message (the first one)
    refused: bool = False  # closed for its token: frames still in flight are not served
    closing: bool = False  # closing for a restart: new starts are refused
    closed: bool = False  # closed for a restart: nothing more is sent
    _answered: asyncio.Event | None = None  # set once no start waits for its answer

    @property
    def channel_receive(self) -> Receive:
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, receive: Receive) -> None:
        # Channels sets this to the channel layer's receive before it reads
        # anything: wrapped, a failing Redis does not end the consumer.
        self._channel_receive = functools.partial(receive_through_outages, receive)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' default dispatch hops to a thread before every message to
        # close stale database connections; most of this socket's work never
        # touches the database, so only the requests that may do so clean up
        # (subscribe, cancel, list and a resync after a Redis outage).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']!r}")
        await handler(message)

    async def connect(self) -> None:
        self.owner = permissions.owner_for_scope(self.scope, self.channel_name)
        self.limits = protocol_limits()
        self.watching = {}
        self.pending = {}
        self.refs = {}
        self.send_frame = frame_send(self.base_send)
        self.address = limits.client_address(self.scope)
        liveness.ensure_heartbeat()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                by_header = await tokens.socket_header_owner(self.scope)
        except Exception as exc:
            await self.accept(subprotocol=tokens.SUBPROTOCOL)
            await self._refuse_auth(exc)
            return
        if by_header is not None:
            self.owner = by_header
        self.may_auth = by_header is None
        await self.accept(subprotocol=tokens.SUBPROTOCOL if by_header else None)
        if restart.drain.stopping:  # this process is going: reconnect to another one
            await self.close_for_restart()
            return
        if not limits.sockets.acquire(self.address):
            logger.warning("refused a socket of %s: too many open sockets", self.address)
            detail = f"more than {limits.sockets.limit} open sockets from this address"
            await self.send_json(error_message("too_many_sockets", detail))
            await self._close_with(CLOSE_TRY_AGAIN_LATER)
            return
        self.counted = True
        metrics.web.sockets_open += 1
        restart.drain.add(self)
        await self.send(text_data=ACCEPT_FRAME)

    async def close_for_restart(self) -> None:
        """Close with 1012 (service restart) once the starts this socket forwarded
        were answered (at most ``START_ANSWER_WAIT`` seconds); refuse new starts."""
        if self.closing:
            return
        self.closing = True  # new starts are refused from now on
        if getattr(self, "refs", None):
            self._answered = asyncio.Event()
            try:
                async with asyncio.timeout(START_ANSWER_WAIT):
                    await self._answered.wait()
            except TimeoutError:
                logger.warning(
                    "closing a socket for a restart before %d of its starts were answered",
                    len(self.refs),
                )
        await self._close_with(restart.CLOSE_SERVICE_RESTART, restart.RESTART_REASON)
        self.closed = True

    async def _close_with(self, code: int, reason: str | None = None) -> None:
        """Close with ``code``, or with 1000 where the server refuses it (Daphne
        without :mod:`progrock.contrib.daphne_close_codes` takes only 1000 and
        3000-4999: 1012 and 1013 raise there), logged once a process."""
        try:
            await self.close(code=code, reason=reason)
        except Exception as exc:
            restart.refused_code(code, exc)
            await self.close(code=1000)

    def _answered_one(self) -> None:
        if self._answered is not None and not self.refs:
            self._answered.set()

    async def disconnect(self, code: int) -> None:
        restart.drain.discard(self)
        if self.counted:
            self.counted = False
            metrics.web.sockets_open -= 1
            limits.sockets.release(self.address)
        hub = get_hub()
        for task_id in list(self.watching) + list(self.pending):
            await hub.unsubscribe(task_id, self)
        self.watching.clear()
        self.pending.clear()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Channels' version also hops to a thread to close stale database
        # connections (about 70 us a socket, paid by every page that closes at
        # the end of its task, so in bursts). This consumer's database work
        # cleans up where it happens (see dispatch); a subclass that joins
        # channel-layer groups gets Channels' version, which leaves them.
        if self.groups:
            await super().websocket_disconnect(message)
            return
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def send_json(self, message: dict[str, Any]) -> None:
        if self.closed:  # closed for a restart: the client resubscribes elsewhere
            return
        await self.send(text_data=dumps(message))

    # -- client requests ----------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame: str | bytes = text_data if text_data is not None else (bytes_data or b"")
        if self.refused:
            return
        request = None
        may_auth, self.may_auth = self.may_auth, False
        try:
            request = parse_client_frame(frame, self.limits)
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if isinstance(request, Auth):
                    await self._authenticate(request, may_auth)
                else:
                    await self._serve(request)
        except Exception as exc:
            if isinstance(request, Auth) or getattr(exc, "code", None) == "unauthenticated":
                # A failed auth never leaves the socket open with its former owner.
                await self._refuse_auth(exc)
                return
            # Whatever failed, it failed this request only: answer it, keep the socket.
            context: dict[str, object] = {"action": getattr(request, "action", None)}
            if isinstance(request, Start):
                context["ref"] = request.ref
            elif request is not None and hasattr(request, "task_id"):
                context["task_id"] = request.task_id
            await self.send_json(error_for(exc, f"{context['action'] or 'a frame'}", **context))

    async def _authenticate(self, request: Auth, first: bool) -> None:
        """Own tasks as the token's user from now on; only as the first message."""
        if not first:
            raise InvalidToken("auth must be the socket's first message, and only one")
        self.owner = await tokens.aowner_for_token(request.token)

    async def _refuse_auth(self, exc: Exception) -> None:
        """Close the socket: 4401 for a bad token, 1013 when it could not be checked."""
        if isinstance(exc, InvalidToken | ProtocolError):
            detail = str(exc) if isinstance(exc, InvalidToken) else exc.detail
            message = tokens.refusal(InvalidToken(detail), action="auth")
            code = tokens.CLOSE_UNAUTHENTICATED
        else:
            message = error_for(exc, "an auth request", action="auth")
            code = CLOSE_TRY_AGAIN_LATER
        self.refused = True
        await self.send_json(message)
        await self._close_with(code, tokens.close_reason(message["detail"]))

    async def _serve(self, request: Any) -> None:
        if isinstance(request, (Subscribe, Cancel, ListTasks)):
            await aclose_old_connections()  # these may read the database
        if isinstance(request, Start):
            if self.closing:
                raise ProtocolError(
                    "unavailable",
                    "this server is restarting: start the task again once reconnected",
                    action="start",
                    ref=request.ref,
                )
            refusal = limits.starts.refusal(self.owner, self.address)
            if refusal is not None:
                raise ProtocolError("rate_limited", refusal, action="start", ref=request.ref)
            await self.start(request)
        elif isinstance(request, Subscribe):
            await self.subscribe(request.task_id)
        elif isinstance(request, Unsubscribe):
            await self.unsubscribe(request.task_id)
        elif isinstance(request, Cancel):
            await self.cancel(request.task_id)
        elif isinstance(request, ListTasks):
            await self.list_tasks()

    async def start(self, request: Start) -> None:
        # A kind run by a task queue is checked before anything is created or queued.
        queued = routes.queued_for(request.kind, request.params, ref=request.ref)
        task_id = str(uuid.uuid4())
        # No live worker or delay server: say so now, not with a task that never moves.
        await liveness.require_live(action="start", ref=request.ref)
        if request.ref is not None:
            self.refs[task_id] = request.ref
        # Listen before the worker can announce anything: no message is missed.
        self.watching[task_id] = 0
        try:
            await get_hub().subscribe(task_id, self)
            if queued is not None:
                self.pending[task_id] = []  # its messages wait for the answer below
                await routes.astart(
                    queued,
                    kind=request.kind,
                    params=request.params,
                    owner=self.owner,
                    task_id=task_id,
                    ref=request.ref,
                )
                await self._answer_queued_start(task_id)
                return
            await forward.forward_start(
                task_id=task_id,
                kind=request.kind,
                params=request.params,
                owner=self.owner,
                reply_channel=self.channel_name,
                ref=request.ref,
            )
        except BaseException:
            await self._forget(task_id)
            raise

    async def _answer_queued_start(self, task_id: str) -> None:
        """Answer the start of a task queue's kind whose job has not begun (its
        ``started`` comes when a worker begins it, maybe minutes later) with its
        ``queued`` snapshot, carrying the start's ``ref``: the client learns the
        task's id now. Messages published meanwhile follow it in order."""
        found = await reads.aget_view_and_owner(task_id)
        held = self.pending.pop(task_id, [])
        if found is not None and found[0].status is Status.QUEUED:
            snapshot = found[0].snapshot()
            ref = self.refs.pop(task_id, None)
            if ref is not None:
                snapshot["ref"] = ref
            self.watching[task_id] = max(self.watching.get(task_id, 0), found[0].seq)
            await self.send_json(snapshot)
            self._answered_one()
        for seq, flag, body in held:  # `started`, or `failed` if it could not be queued
            await self.hub_message(task_id, seq, flag, body)

    async def _authorised_view(self, task_id: str, action: str) -> TaskView:
        found = await reads.aget_view_and_owner(task_id)
        if found is None or not await permissions.amay_access(self.owner, found[1], task_id):
            raise ProtocolError(
                "forbidden",
                f"no task {task_id} that this socket may see",
                action=action,
                task_id=task_id,
            )
        return found[0]

    async def subscribe(self, task_id: str) -> None:
        view = await self._authorised_view(task_id, "subscribe")
        if task_id in self.watching:
            await self._resubscribe(task_id, view)
            return
        self.pending[task_id] = []
        try:
            await get_hub().subscribe(task_id, self)
            view = await self._authorised_view(task_id, "subscribe")
        except BaseException:
            self.pending.pop(task_id, None)
            await get_hub().unsubscribe(task_id, self)
            raise
        held = self.pending.pop(task_id, [])
        self.watching[task_id] = -1
        await self._send_view(task_id, view)
        for seq, flag, body in held:
            await self.hub_message(task_id, seq, flag, body)

    async def _resubscribe(self, task_id: str, view: TaskView) -> None:
        """Answer a subscribe to a task already watched: a fresh snapshot, never one
        older than a message that went out (that would go back in time)."""
        for _ in range(3):
            last = self.watching.get(task_id)
            if last is None:  # its end went out while the view loaded
                if view.status.terminal:
                    await self.send_json(view.snapshot())  # the end itself went out once
                    return
            elif view.seq >= last or view.status.terminal:
                await self._send_view(task_id, view)
                return
            # A message newer than the view went out meanwhile: read again (live
            # state is written with the message, so the next read is as new).
            view = await self._authorised_view(task_id, "subscribe")
        raise ProtocolError(
            "unavailable",
            f"task {task_id} changed faster than its state could be read; retry",
            action="subscribe",
            task_id=task_id,
        )

    async def _send_view(self, task_id: str, view: TaskView) -> None:
        last = self.watching.get(task_id)
        if last is None:
            return  # its end went out while the view loaded: nothing more to send
        if view.seq < last and not view.status.terminal:
            return  # a newer message already went out: this snapshot would go back in time
        self.watching[task_id] = max(last, view.seq)
        await self.send_json(view.snapshot())
        terminal = view.terminal()
        if terminal is not None:
            await self.send_json(terminal)
            await self._forget(task_id)

    async def unsubscribe(self, task_id: str) -> None:
        await self._forget(task_id)
        await self.send_json({"type": "unsubscribed", "task_id": task_id})

    async def cancel(self, task_id: str) -> None:
        view = await self._authorised_view(task_id, "cancel")
        if view.status.terminal:
            raise ProtocolError(
                "not_cancellable",
                f"task {task_id} is already {view.status.value}",
                action="cancel",
                task_id=task_id,
            )
        await forward.forward_cancel(task_id, reply_channel=self.channel_name)

    async def list_tasks(self) -> None:
        views = await reads.alist_views(self.owner)
        await self.send_json({"type": "tasks", "tasks": [v.snapshot() for v in views]})

    async def _forget(self, task_id: str) -> None:
        self.watching.pop(task_id, None)
        self.pending.pop(task_id, None)
        self.refs.pop(task_id, None)
        self._answered_one()
        await get_hub().unsubscribe(task_id, self)

    # -- from the hub -------------------------------------------------------

    async def hub_message(self, task_id: str, seq: int, flag: str, body: str) -> None:
        held = self.pending.get(task_id)
        if held is not None:
            held.append((seq, flag, body))
            return
        last = self.watching.get(task_id)
        if last is None:
            return
        if seq <= last and flag != FLAG_TERMINAL:
            # Already sent (or older). A terminal message always goes through:
            # after live state was rebuilt its seq may be lower than one the
            # socket saw, and every watcher must still get the end, once
            # (_forget below makes sure of the once).
            return
        if self.closed:  # closed for a restart: the client resubscribes elsewhere
            return
        self.watching[task_id] = seq
        ref = self.refs.pop(task_id, None)
        if ref is not None:
            # The first message of a task this socket started carries its ref:
            # `started`, or `failed` if the backend refused the task.
            message = json.loads(body)
            message["ref"] = ref
            body = dumps(message)
        await self.send_frame({"type": "websocket.send", "text": body})
        metrics.web.updates_pushed += 1
        if ref is not None:
            self._answered_one()  # after its frame: a restart's close follows it
        if flag == FLAG_TERMINAL:
            await self._forget(task_id)

    async def hub_resync(self, task_id: str) -> None:
        if task_id not in self.watching:
            return
        async with asyncio.timeout(REQUEST_TIMEOUT):  # the hub's reader waits for this
            await aclose_old_connections()
            found = await reads.aget_view_and_owner(task_id)
        last = self.watching.get(task_id)
        if (
            found is not None
            and last is not None
            and (found[0].seq > last or found[0].status.terminal)
        ):
            await self._send_view(task_id, found[0])

    # -- from workers (channel layer) ---------------------------------------

    async def progrock_error(self, event: dict[str, Any]) -> None:
        """An error a worker reports about a request of this socket."""
        task_id = event.get("task_id")
        try:
            message = error_message(
                str(event.get("code")),
                # No addresses, nor the owner string (it holds the session key).
                redact(str(event.get("detail"))).replace(self.owner, "this owner"),
                action=event.get("action"),
                task_id=task_id,
                ref=event.get("ref"),
            )
        except ValueError:
            logger.error("worker sent an error with an unknown code: %r", event)
            return
        if isinstance(task_id, str) and self.watching.get(task_id) == 0:
            await self._forget(task_id)  # the task never started
        await self.send_json(message)
