"""Connection: one WebSocket, one loop that owns it, on the node that accepted it.

The route handler runs :meth:`Connection.run`, which reads frames, checks
their size and rate, decodes and validates them, and hands each message on:
``join`` and ``ping`` are served here (the edge: token checks, liveness);
every other message goes to the participant session through its
``SessionPort``. The connection owns two tasks, a writer (drains the outbox,
stamps ``seq``) and a ticker (heartbeat, join timeout, slow-consumer check),
and cancels and awaits both before ``run`` returns. It implements
``ClientLink``: everyone else only posts to its outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum

from aiohttp import WSMsgType, web

from conference.errors import ConferenceError
from conference.events import LeaveReason
from signaling import handlers, stage_handlers  # noqa: F401  (they register their messages)
from signaling.errors import CloseCode, ErrorCode, SignalError, WireCode
from signaling.link import SessionPort
from signaling.node import Node
from signaling.protocol import (
    MESSAGES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    EncodedEvent,
    Message,
    Text,
    encode,
    encode_error,
    reply,
)
from signaling.ratelimit import StrikeCounter, TokenBucket
from signaling.relay import Relay, open_session
from signaling.session import message_type

log = logging.getLogger("parley.connection")


class State(Enum):
    CONNECTED = "connected"
    JOINED = "joined"
    CLOSING = "closing"


@dataclass(frozen=True)
class _Close:
    code: CloseCode
    reason: str


_Outgoing = EncodedEvent | _Close


class Connection:
    def __init__(self, ws: web.WebSocketResponse, node: Node, *, url_token: str | None,
                 url_room: str | None, remote: str | None,
                 transport: asyncio.Transport | None = None, relay: Relay | None = None,
                 ) -> None:
        self.ws = ws
        self.relay = relay
        """A clustered node's relay: the join opens the session where the room lives."""
        self._transport = transport
        """The socket under ``ws`` (``request.transport``): aborted when a write is stuck."""
        self.node = node
        self.url_token = url_token
        self.url_room = url_room
        self.remote = remote
        cfg = node.config.signaling
        self._cfg = cfg
        self.state = State.CONNECTED
        self.session: SessionPort | None = None
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue(cfg.send_queue_size)
        self._seq = 0
        self._opened = time.monotonic()
        self._last_seen = self._opened
        self._bucket = TokenBucket(cfg.rate_limit_per_second, cfg.rate_limit_burst)
        self._strikes = StrikeCounter(cfg.rate_limit_strikes, cfg.rate_limit_window)
        self._slow = False
        self._leave_reason = LeaveReason.DISCONNECTED

    # -- the loop ------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._write_loop(), name="signal-writer")
        ticker = loop.create_task(self._tick_loop(), name="signal-ticker")
        self.node.register(self)
        try:
            async for msg in self.ws:
                self._last_seen = time.monotonic()
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    if self._allow():
                        self.send_error(ErrorCode.BINARY_NOT_SUPPORTED, "send JSON text frames")
                elif msg.type == WSMsgType.PING:
                    await self.ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._leave(self._leave_reason)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self._stop_writer(writer)
            self.node.unregister(self)

    async def _stop_writer(self, writer: asyncio.Task[None]) -> None:
        if not writer.done():
            self._post(_Close(CloseCode.NORMAL, "bye"), force=True)
            try:
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        if not self.ws.closed:
            await self._within_deadline(self.ws.close(code=CloseCode.GOING_AWAY))

    async def _on_text(self, data: str) -> None:
        if self.state is State.CLOSING:
            return
        if len(data) > self._cfg.max_message_bytes or \
                len(data.encode()) > self._cfg.max_message_bytes:
            self.send_error(ErrorCode.MESSAGE_TOO_LARGE,
                            f"messages are limited to {self._cfg.max_message_bytes} bytes")
            self.close(CloseCode.MESSAGE_TOO_BIG, "message too large")
            return
        if not self._allow():
            return
        try:
            message = MESSAGES.parse(data)
        except SignalError as err:
            self.node.metrics.received("invalid")
            self.send_error(err.code, err.message, err.msg_id)
            return
        mtype = message_type(message)
        self.node.metrics.received(mtype)
        spec = MESSAGES.spec(mtype)
        if spec.edge:
            await spec.handler(self, message)
        elif self.session is None:
            self.send_error(ErrorCode.NOT_JOINED, "join first", message.id)
        else:
            await self.session.handle(message)

    def _allow(self) -> bool:
        """Take a token; on refusal send rate_limited and, on sustained abuse, close."""
        if self._bucket.take():
            return True
        self.node.metrics.received("invalid")
        self.send_error(ErrorCode.RATE_LIMITED, "too many messages; slow down")
        if self._strikes.strike():
            self._leave_reason = LeaveReason.PROTOCOL_VIOLATION
            self.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
        return False

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, _Close):
                self.state = State.CLOSING
                await self._within_deadline(
                    self.ws.close(code=item.code, message=item.reason.encode()[:120]))
                return
            self._seq += 1
            self.node.metrics.sent(item.type)
            if not await self._within_deadline(self.ws.send_str(item.with_seq(self._seq))):
                return

    async def _within_deadline(self, write: Awaitable[object]) -> bool:
        """Run one write to the socket within ``send_timeout``; a write that cannot finish
        (the client stopped reading and the TCP window is full) aborts the socket."""
        try:
            await asyncio.wait_for(write, self._cfg.send_timeout)
        except TimeoutError:
            log.info("send timed out; aborting the socket", extra={"remote": self.remote})
            self.node.metrics.send_timeouts.inc()
            self.abort()
            return False
        except (ConnectionError, RuntimeError):  # the transport is closing or gone
            return False
        return True

    async def _tick_loop(self) -> None:
        cfg = self._cfg
        tick = min(0.5, cfg.heartbeat_interval / 2, cfg.join_timeout / 2)
        next_ping = time.monotonic() + cfg.heartbeat_interval
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._slow:
                self._leave(LeaveReason.DISCONNECTED)
                await self._within_deadline(
                    self.ws.close(code=CloseCode.SLOW_CONSUMER, message=b"slow consumer"))
                return
            if self.state is State.CONNECTED and now - self._opened > cfg.join_timeout:
                self.send_error(ErrorCode.JOIN_TIMEOUT, "no join within the join timeout")
                self.close(CloseCode.JOIN_TIMEOUT, "join timeout")
                return
            if now - self._last_seen > cfg.heartbeat_timeout:
                log.info("heartbeat timeout", extra={"remote": self.remote})
                self._leave(LeaveReason.HEARTBEAT_TIMEOUT)
                self.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                return
            if now >= next_ping:
                next_ping = now + cfg.heartbeat_interval
                if not await self._within_deadline(self.ws.ping()):
                    return

    # -- ClientLink ------------------------------------------------------------
    def _post(self, item: _Outgoing, *, force: bool = False) -> None:
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            if force:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._outbox.get_nowait()
                self._outbox.put_nowait(item)
            else:
                self._slow = True

    def send(self, message: EncodedEvent) -> None:
        self._post(message)

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the writer to close after what is queued. Idempotent."""
        if self.state is State.CLOSING:
            return
        self.state = State.CLOSING
        self._post(_Close(code, reason), force=True)

    def send_error(self, code: WireCode, message: str, msg_id: str | None = None) -> None:
        self.node.metrics.error(code.value)
        self._post(encode_error(code, message, msg_id))

    def shutdown(self, *, reconnect: bool = False) -> None:
        """The node is draining: tell the client and close. ``reconnect`` (a cluster): the
        socket's session may live on another node and go on; the client reconnects at once
        and resumes through another node (``reconnect``, 4010) instead of ending."""
        if reconnect:
            self.send(encode({"type": "reconnect", "reason": LeaveReason.NODE_DRAINING.value,
                              "message": "the node is going away; reconnect"}))
            self.close(CloseCode.RECONNECT, LeaveReason.NODE_DRAINING.value)
            self._leave(LeaveReason.DISCONNECTED)  # a drop, not a goodbye: it may resume
            return
        self._leave(LeaveReason.SERVER_SHUTDOWN)
        self.send(encode({"type": "disconnect", "reason": LeaveReason.SERVER_SHUTDOWN.value,
                          "message": "the server is shutting down"}))
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    def abort(self) -> None:
        """Drop the socket without a close handshake (a client that does not read, or the
        end of the node's grace period). ``run`` then sees the socket end, the participant
        leaves and the connection unregisters. Idempotent."""
        self.state = State.CLOSING
        self._leave(self._leave_reason)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def _leave(self, reason: LeaveReason) -> None:
        """Leave the room if still in it; idempotent."""
        if self.session is not None:
            self.session.leave(reason)


# -- the messages the edge serves itself ---------------------------------------------
class Join(Message, tag="join"):
    token: str | None = None
    version: int | None = None
    room: str | None = None
    media: bool | None = None
    resume: Text | None = None


class Ping(Message, tag="ping"):
    pass


@MESSAGES.handles(Join, edge=True)
async def handle_join(c: Connection, m: Join) -> None:
    if c.session is not None:
        c.send_error(ErrorCode.ALREADY_JOINED, "already joined", m.id)
        return
    version = PROTOCOL_VERSION if m.version is None else m.version
    if version not in SUPPORTED_VERSIONS:
        c.send_error(ErrorCode.UNSUPPORTED_VERSION,
                     f"protocol version {version} not supported; "
                     f"supported: {list(SUPPORTED_VERSIONS)}", m.id)
        return
    node = c.node
    if c.remote is not None and not node.join_limits.take(c.remote):
        node.metrics.refused("join_rate")
        c.send_error(ErrorCode.RATE_LIMITED, "too many joins from this address; retry later",
                     m.id)
        c.close(CloseCode.RATE_LIMITED, "join rate exceeded")
        return
    try:
        claims = node.verifier.verify(m.token or c.url_token)
        wanted = m.room or c.url_room
        if wanted is not None and wanted != claims.grants.room:
            raise SignalError(ErrorCode.WRONG_ROOM, "the token is for another room")
        if claims.grants.room == "*":
            raise SignalError(ErrorCode.WRONG_ROOM,
                              "a token for every room (\"*\") is for the admin API only")
        if not claims.grants.room_join:
            raise SignalError(ErrorCode.JOIN_NOT_ALLOWED, "the token does not grant room_join")
    except SignalError as err:
        node.metrics.auth_failures.labels(reason=err.code.value).inc()
        c.send_error(err.code, err.message, m.id)
        c.close(CloseCode.AUTH_FAILED, err.code.value)
        return
    try:
        c.session = await open_session(
            node, c.relay, c, claims, msg_id=m.id, version=version,
            media=m.media is not False, remote=c.remote, resume=m.resume)
    except ConferenceError as err:
        c.send_error(err.code, err.message, m.id)
        c.close(CloseCode.JOIN_REFUSED, err.code.value)
        return
    c.state = State.JOINED


@MESSAGES.handles(Ping, edge=True)
async def handle_ping(c: Connection, m: Ping) -> None:
    c.send(reply(m.id, {"type": "pong", "time": time.time()}))
