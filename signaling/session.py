"""SignalSession: one WebSocket, one loop that owns its state.

The route handler runs :meth:`SignalSession.run`, which reads messages and
dispatches them in order; it owns two tasks, a writer (drains the outbox,
stamps ``seq``) and a ticker (heartbeat, join timeout, slow-consumer check),
and cancels and awaits both before it returns. Everyone else only posts to
the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import WSMsgType, web

from conference.errors import ConferenceError
from conference.events import Disconnected, LeaveReason, RoomEvent
from conference.participant import Participant
from conference.room import Room
from sfu.errors import SfuError
from signaling.errors import CloseCode, ErrorCode, SignalError
from signaling.handlers import dispatch
from signaling.node import Node
from signaling.protocol import EncodedEvent, encode_event, error_message, parse_message
from signaling.ratelimit import StrikeCounter, TokenBucket

log = logging.getLogger("parley.session")

_CLOSE_FOR_REASON = {
    LeaveReason.DUPLICATE_IDENTITY: CloseCode.REPLACED,
    LeaveReason.REMOVED: CloseCode.REMOVED,
    LeaveReason.ROOM_CLOSED: CloseCode.ROOM_CLOSED,
    LeaveReason.SERVER_SHUTDOWN: CloseCode.GOING_AWAY,
}


class State(Enum):
    CONNECTED = "connected"
    JOINED = "joined"
    CLOSING = "closing"


@dataclass(frozen=True)
class _Close:
    code: CloseCode
    reason: str


_Outgoing = dict[str, Any] | EncodedEvent | _Close
"""What the writer sends: a reply (dict), a room event encoded once, or a close."""


class SignalSession:
    def __init__(self, ws: web.WebSocketResponse, node: Node, *, url_token: str | None,
                 url_room: str | None, remote: str | None) -> None:
        self.ws = ws
        self.node = node
        self.url_token = url_token
        self.url_room = url_room
        self.remote = remote
        cfg = node.config.signaling
        self._cfg = cfg
        self.state = State.CONNECTED
        self.room: Room | None = None
        self.participant: Participant | None = None
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
            self.leave_room(self._leave_reason)
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
            await self.ws.close(code=CloseCode.GOING_AWAY)

    async def _on_text(self, data: str) -> None:
        if self.state is State.CLOSING:
            return
        if len(data.encode()) > self._cfg.max_message_bytes:
            self.send_error(ErrorCode.MESSAGE_TOO_LARGE,
                            f"messages are limited to {self._cfg.max_message_bytes} bytes")
            self.close(CloseCode.MESSAGE_TOO_BIG, "message too large")
            return
        if not self._allow():
            return
        try:
            message = parse_message(data)
        except SignalError as err:
            self.node.metrics.received("invalid")
            self.send_error(err.code, err.message, err.msg_id)
            return
        self.node.metrics.received(message.type)
        try:
            await dispatch(self, message)
        except SignalError as err:
            self.send_error(err.code, err.message, err.msg_id or message.id)
        except (ConferenceError, SfuError) as err:
            self.send_error(ErrorCode(err.code.value), err.message, message.id)
        except Exception:
            log.exception("handler failed", extra=self.log_extra())
            self.send_error(ErrorCode.INTERNAL_ERROR, "internal error", message.id)

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
                await self.ws.close(code=item.code, message=item.reason.encode()[:120])
                return
            self._seq += 1
            if isinstance(item, EncodedEvent):
                self.node.metrics.sent(item.type)
                text = item.with_seq(self._seq)
            else:
                item["seq"] = self._seq
                self.node.metrics.sent(item["type"])
                text = json.dumps(item, separators=(",", ":"))
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                return

    async def _tick_loop(self) -> None:
        cfg = self._cfg
        tick = min(0.5, cfg.heartbeat_interval / 2, cfg.join_timeout / 2)
        next_ping = time.monotonic() + cfg.heartbeat_interval
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._slow:
                self.leave_room(LeaveReason.DISCONNECTED)
                await self.ws.close(code=CloseCode.SLOW_CONSUMER, message=b"slow consumer")
                return
            if self.state is State.CONNECTED and now - self._opened > cfg.join_timeout:
                self.send_error(ErrorCode.JOIN_TIMEOUT, "no join within the join timeout")
                self.close(CloseCode.JOIN_TIMEOUT, "join timeout")
                return
            if now - self._last_seen > cfg.heartbeat_timeout:
                log.info("heartbeat timeout", extra=self.log_extra())
                self.leave_room(LeaveReason.HEARTBEAT_TIMEOUT)
                self.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                return
            if now >= next_ping:
                next_ping = now + cfg.heartbeat_interval
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.ping()

    # -- posting -------------------------------------------------------------
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

    def send(self, message: dict[str, Any]) -> None:
        self._post(message)

    def reply(self, msg_id: str | None, message: dict[str, Any]) -> None:
        if msg_id is not None:
            message["id"] = msg_id
        self._post(message)

    def send_error(self, code: ErrorCode, message: str, msg_id: str | None = None) -> None:
        self.node.metrics.errors.labels(code=code.value).inc()
        self._post(error_message(code, message, msg_id))

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the writer to close after what is queued. Idempotent."""
        if self.state is State.CLOSING:
            return
        self.state = State.CLOSING
        self._post(_Close(code, reason), force=True)

    def shutdown(self) -> None:
        """The node is draining: tell the client and close."""
        self.leave_room(LeaveReason.SERVER_SHUTDOWN)
        self.send({"type": "disconnect", "reason": LeaveReason.SERVER_SHUTDOWN.value,
                   "message": "the server is shutting down"})
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    # -- room side -----------------------------------------------------------
    def deliver(self, event: RoomEvent) -> None:
        """The participant's event sink (called by the Room; never blocks)."""
        self._post(encode_event(event))
        if isinstance(event, Disconnected):
            self.participant = None
            self.close(_CLOSE_FOR_REASON.get(event.reason, CloseCode.NORMAL), event.reason.value)

    def joined(self, room: Room, participant: Participant) -> None:
        self.room, self.participant = room, participant
        self.state = State.JOINED

    def leave_room(self, reason: LeaveReason) -> None:
        """Leave the room if still in it; idempotent."""
        if self.room is not None and self.participant is not None:
            self.node.rooms.leave(self.room.name, self.participant.id, reason)
        self.participant = None

    def require_participant(self) -> tuple[Room, Participant]:
        if self.room is None or self.participant is None:
            raise SignalError(ErrorCode.NOT_JOINED, "join first")
        return self.room, self.participant

    def log_extra(self) -> dict[str, Any]:
        return {
            "room": self.room.name if self.room else None,
            "participant": self.participant.id if self.participant else None,
            "remote": self.remote,
        }
